"""Mixed-precision training (`precision="bf16"|"fp16"` where the target has no such precision of
its own, e.g. cpu): fp32 master weights and optimizer state, forward and backward in the
reduced dtype, and for fp16 dynamic loss scaling as torch.amp.GradScaler does.

The backbone is rewritten (`to_mixed`): every float32 parameter, input and constant is cast to
the reduced dtype where it is first used (the parameters stay float32 in the step's state:
these casts are the "cast at step start"), and each operator then runs in that dtype, except
the ones torch.autocast also keeps in float32 for range and accuracy (FP32_OPS: reductions,
normalisations, softmax, exp/log/erf/tanh...), which get float32 inputs and give their result
back in the reduced dtype. The prediction is cast to float32 for the loss (float32, as under
autocast). TVM's Gradient pass differentiates the casts (the adjoint of a cast is the cast
back), so the backward pass runs in the same dtypes as the forward and the gradients arrive in
float32 for the float32 optimizer update. `report` says which operators ran in which dtype.

fp16 loss scaling (Trainer, LossScaler below): the loss is multiplied by the scale S before
the backward pass, through the labels (the class-probability rows the step takes: the
cross-entropy losses are linear in them; mse is not, so fp16 needs a cross-entropy loss), the
gradients are divided by S in float32 on the host, and a step whose gradients hold inf/NaN is
skipped: S *= backoff_factor (0.5). After growth_interval (2000) good steps in a row,
S *= growth_factor (2). Initial S = 2**16, as torch.amp.GradScaler.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import AnychipError

REDUCED = {"bf16": "bfloat16", "fp16": "float16"}

FP32_OPS = frozenset({
    "relax.sum", "relax.mean", "relax.variance", "relax.max", "relax.min", "relax.prod",
    "relax.cumsum", "relax.nn.softmax", "relax.nn.log_softmax", "relax.nn.layer_norm",
    "relax.nn.rms_norm", "relax.nn.group_norm", "relax.nn.batch_norm", "relax.exp",
    "relax.log", "relax.sqrt", "relax.rsqrt", "relax.power", "relax.erf", "relax.tanh",
    "relax.sigmoid", "relax.nn.gelu", "relax.nn.gelu_tanh", "relax.nn.silu",
    "relax.nn.softplus", "relax.divide",
})


@dataclass
class LossScaler:
    """torch.amp.GradScaler's dynamic loss scale (its defaults)."""

    scale: float = 65536.0
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    good_steps: int = 0
    skipped: int = 0

    def update(self, finite: bool) -> None:
        if not finite:
            self.scale *= self.backoff_factor
            self.good_steps = 0
            self.skipped += 1
            return
        self.good_steps += 1
        if self.good_steps == self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _dtype(expr) -> str | None:
    ty = getattr(expr, "ty", None)
    dtype = getattr(ty, "dtype", None)
    if dtype is None or not hasattr(ty, "shape"):
        return None
    return str(getattr(dtype, "dtype", dtype))


def to_mixed(module, precision: str):
    """The backbone module with its computation in the reduced dtype; (module, report)."""
    import tvm
    from tvm import relax

    reduced = REDUCED[precision]
    func = module["backbone"]
    op = relax.op
    counts: dict[str, dict[str, int]] = {reduced: {}, "float32": {}}
    bb = relax.BlockBuilder()
    params = list(func.params)
    with bb.function("backbone", params):
        with bb.dataflow():
            remap: dict = {}

            def cast(expr, dtype):
                if _dtype(expr) in ("float32", "float16", "bfloat16") and _dtype(expr) != dtype:
                    return bb.emit(op.astype(expr, dtype))
                return expr

            def get(expr):
                if isinstance(expr, relax.Var):
                    if expr in remap:
                        return remap[expr]
                    if any(expr.same_as(p) for p in params) and _dtype(expr) == "float32":
                        remap[expr] = bb.emit(op.astype(expr, reduced))
                        return remap[expr]
                    return expr
                if isinstance(expr, tvm.ir.Constant):
                    return cast(expr, reduced)
                if isinstance(expr, relax.Tuple):
                    return relax.Tuple([get(f) for f in expr.fields])
                if isinstance(expr, relax.TupleGetItem):
                    return relax.TupleGetItem(get(expr.tuple_value), expr.index)
                return expr

            def count(dtype: str, name: str) -> None:
                short = name.replace("relax.", "")
                counts[dtype][short] = counts[dtype].get(short, 0) + 1

            def call(value):
                name = value.op.name
                args = [get(a) for a in value.args]
                if name == "relax.astype":
                    target = str(value.attrs.dtype)
                    if target == "float32":
                        target = reduced
                    return op.astype(args[0], target)
                floats = [a for a in args if _dtype(a) in ("float32", reduced)]
                if not floats:
                    return relax.Call(value.op, args, value.attrs, value.ty_args)
                if name in FP32_OPS:
                    args = [cast(a, "float32") for a in args]
                    count("float32", name)
                    out = bb.emit(relax.Call(value.op, args, value.attrs, value.ty_args))
                    return cast(out, reduced) if _dtype(out) == "float32" else out
                args = [cast(a, reduced) for a in args]
                count(reduced, name)
                out = bb.emit(relax.Call(value.op, args, value.attrs, value.ty_args))
                return cast(out, reduced) if _dtype(out) == "float32" else out

            for block in func.body.blocks:
                for binding in block.bindings:
                    if not isinstance(binding, relax.VarBinding):
                        raise AnychipError("mixed precision: the backbone has a match_cast "
                                           "binding; report the model.")
                    value = binding.value
                    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                        new = call(value)
                    elif isinstance(value, relax.Call):
                        raise AnychipError(f"mixed precision: a call of {value.op} in the "
                                           f"backbone; report the model.")
                    else:
                        new = get(value)
                    remap[binding.var] = new if isinstance(new, relax.Var) else bb.emit(new)

            result = func.body.body
            if isinstance(result, relax.Var) and isinstance(result.ty, relax.TupleType):
                fields = [relax.TupleGetItem(result, i) for i in range(len(result.ty.fields))]
            elif isinstance(result, relax.Tuple):
                fields = list(result.fields)
            else:
                fields = None
            if fields is None:
                out = bb.emit_output(cast(get(result), "float32"))
            else:
                outs = [bb.emit_output(cast(bb.emit(get(f)) if isinstance(get(f), relax.Tuple)
                                            else get(f), "float32")) for f in fields]
                out = relax.Tuple(outs)
        bb.emit_func_output(out)
    new = bb.get()["backbone"]
    mod = tvm.IRModule({"backbone": new}).with_attrs(dict(module.attrs))
    report = {"compute_dtype": reduced, "master_weights": "float32",
              "optimizer_state": "float32", "loss": "float32", "gradients_out": "float32",
              "ops": {k: dict(sorted(v.items())) for k, v in counts.items()}}
    return mod, report
