"""ONNX -> TVM Relax through `tvm.relax.frontend.onnx.from_onnx`, with static input shapes.

Static shapes are required: TVM's importer loses symbolic shapes after a Transpose
(tvm-notes.md), and every backend's memory planning and tiling wants them.
"""

from __future__ import annotations

from .errors import AnychipError
from .frontend import ModelSource
from .importer_fixes import prepare_for_tvm
from .onnx_safety import iter_graphs


def unsupported_ops(source: ModelSource) -> dict[str, str]:
    """{op_type: first node name} for ops TVM's ONNX importer has no converter for."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    local = {f.name for f in source.proto.functions}
    missing: dict[str, str] = {}
    for graph in iter_graphs(source.proto, source.label):
        for node in graph.node:
            if node.op_type not in known and node.op_type not in local:
                missing.setdefault(node.op_type, node.name or "(unnamed)")
    return missing


def to_relax(source: ModelSource, keep_params_in_input: bool = False):
    """Import the sanitized model; every input must have a static shape."""
    from tvm.relax.frontend.onnx import from_onnx

    dynamic = [s for s in source.inputs if not s.is_static]
    if dynamic:
        spec = dynamic[0]
        example = "x".join(str(d) if isinstance(d, int) else "1" for d in spec.shape) or "1"
        raise AnychipError(f"{source.label}: input '{spec.name}' has dynamic shape "
                           f"{list(spec.shape)}; give a static one with --shape "
                           f"{spec.name}={example} (shapes=... in Python).")
    source = prepare_for_tvm(source)  # importer_fixes: ONNX-level fixes + extra converters
    missing = unsupported_ops(source)
    if missing:
        listed = ", ".join(f"{op} (node '{n}')" for op, n in sorted(missing.items()))
        raise AnychipError(f"{source.label}: TVM's ONNX importer does not support {listed}; "
                           f"rewrite these ops or run 'anychip conformance' to see what is covered.")
    shape_dict = {s.safe_name: list(s.shape) for s in source.inputs}
    dtype_dict = {s.safe_name: s.dtype for s in source.inputs}
    try:
        return from_onnx(source.proto, shape_dict=shape_dict, dtype_dict=dtype_dict,
                         keep_params_in_input=keep_params_in_input, sanitize_input_names=False)
    except AnychipError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        raise AnychipError(f"{source.label}: TVM's ONNX importer failed: {first}. "
                           f"Run 'anychip compare' or report the model.") from exc
