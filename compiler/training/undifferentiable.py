"""Which operators of a training graph have no gradient, found before TVM's Gradient pass.

TVM's pass stops at the first operator without "FPrimalGradient" and names only that one; a
user porting a model needs the whole list at once. This walks the loss function backwards
from the loss, as the pass does, following adjoints into every floating-point argument, and
collects each operator on that path that has no gradient (or, for strided_slice, a form the
registered gradient does not cover: a negative stride).

Relax bindings carry no ONNX node names, so the ONNX nodes are matched by operator type
(ONNX_OPS); where none matches, the Relax binding is named instead.
"""

from __future__ import annotations

ONNX_OPS = {
    "relax.squeeze": ("Squeeze",), "relax.strided_slice": ("Slice", "Split"),
    "relax.nn.layer_norm": ("LayerNormalization",), "relax.nn.rms_norm": ("RMSNormalization",),
    "relax.nn.gelu": ("Gelu",), "relax.nn.gelu_tanh": ("Gelu", "FastGelu"), "relax.erf": ("Erf",),
    "relax.tile": ("Tile", "Expand"), "relax.repeat": ("Tile",), "relax.flip": ("Slice",),
    "relax.max": ("ReduceMax",), "relax.min": ("ReduceMin",), "relax.prod": ("ReduceProd",),
    "relax.gather_elements": ("GatherElements",), "relax.gather_nd": ("GatherND",),
    "relax.scatter_elements": ("ScatterElements",), "relax.nn.conv1d": ("Conv",),
    "relax.nn.adaptive_avg_pool2d": ("GlobalAveragePool",), "relax.clip": ("Clip",),
    "relax.nn.leakyrelu": ("LeakyRelu",), "relax.nn.softplus": ("Softplus",),
    "relax.nn.group_norm": ("GroupNormalization", "InstanceNormalization"),
    "relax.nn.pad": ("Pad",), "relax.sign": ("Sign",), "relax.floor": ("Floor",),
    "relax.nn.prelu": ("PRelu",), "relax.tril": ("Trilu",), "relax.triu": ("Trilu",),
}


def _float(expr) -> bool:
    ty = getattr(expr, "ty", None)
    dtype = getattr(ty, "dtype", None)
    dtype = getattr(dtype, "dtype", dtype)
    return dtype is not None and str(dtype).startswith(("float", "bfloat"))


def _has_gradient(call) -> bool:
    from .gradients import strided_slice_plan

    if call.op.get_attr("FPrimalGradient") is None:
        return False
    if call.op.name == "relax.strided_slice":
        try:
            return strided_slice_plan(call) is not None
        except (TypeError, ValueError, AttributeError):   # symbolic bounds
            return False
    return True


def missing_gradients(func) -> dict[str, int]:
    """{operator: number of uses} of operators on the backward path without a gradient."""
    import tvm
    from tvm import relax

    bindings = [b for block in func.body.blocks for b in block.bindings]
    need = set()

    def want(expr) -> None:
        if isinstance(expr, relax.Var):
            need.add(expr)
        elif isinstance(expr, relax.Tuple):
            for field in expr.fields:
                want(field)

    want(func.body.body)
    missing: dict[str, int] = {}
    for binding in reversed(bindings):
        if binding.var not in need:
            continue
        value = binding.value
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            if not _has_gradient(value):
                missing[value.op.name] = missing.get(value.op.name, 0) + 1
                continue
            for arg in value.args:
                if _float(arg) or isinstance(arg, relax.Tuple):
                    want(arg)
        elif isinstance(value, relax.TupleGetItem):
            want(value.tuple_value)
        elif isinstance(value, (relax.Tuple, relax.Var)):
            want(value)
    return missing


def refusal(label: str, missing: dict[str, int], proto) -> str:
    """One message naming every operator without a gradient and the ONNX nodes behind it."""
    parts = []
    for op, uses in sorted(missing.items()):
        kinds = ONNX_OPS.get(op, ())
        nodes = [n.name or n.output[0] for n in proto.graph.node if n.op_type in kinds]
        where = (f"ONNX {'/'.join(kinds)} nodes {', '.join(repr(n) for n in nodes[:6])}"
                 + (f" and {len(nodes) - 6} more" if len(nodes) > 6 else "")) if nodes \
            else "no matching ONNX node name"
        parts.append(f"{op} ({uses} use{'s' if uses > 1 else ''}; {where})")
    return (f"{label}: no gradient for {len(missing)} operator{'s' if len(missing) > 1 else ''}: "
            f"{'; '.join(parts)}. Replace those layers with ones TVM can differentiate, or report "
            f"the operators.")


def check_differentiable(backbone, loss, label_type, label: str) -> None:
    """Register anychip's gradients, then refuse (listing them all) any operator on the
    backward path that still has none, before TVM's Gradient pass stops at the first."""
    from tvm.relax.training.utils import AppendLoss
    from tvm.relax.transform import DecomposeOpsForTraining

    from ..errors import AnychipError
    from .gradients import register

    register()
    mod = AppendLoss("backbone", loss(backbone.prediction, label_type),
                     loss.num_backbone_outputs, "backbone_loss")(backbone.module)
    mod = DecomposeOpsForTraining("backbone_loss")(mod)
    missing = missing_gradients(mod["backbone_loss"])
    if missing:
        raise AnychipError(refusal(label, missing, backbone.proto))
