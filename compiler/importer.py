"""ONNX -> TVM Relax through `tvm.relax.frontend.onnx.from_onnx`.

Static dims stay static. A symbolic dim (ONNX `dim_param`) becomes one `tir.Var` per name,
shared by every input naming it; where TVM's importer loses the symbols inside the graph,
importer_fixes/symbolic.py re-states the shapes ONNX inferred. The symbols' bounds (the
user's `--dim`, else a default range) are attached to `main` as `tir_var_lower_bound` /
`tir_var_upper_bound`, which TVM's memory planning reads to size buffers for the upper bound.
"""

from __future__ import annotations

import contextlib
import threading

from .errors import AnychipError, InputsRejected
from .frontend import ModelSource
from .importer_fixes import prepare_for_tvm
from .importer_fixes.recurrent import MAX_STEPS
from .onnx_inference import light_twin
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

    from .importer_fixes import symbolic

    unknown = [s for s in source.inputs
               if any(d == "?" or (isinstance(d, int) and d < 0) for d in s.shape)]
    if unknown:
        raise AnychipError(f"{source.label}: input dims without a name cannot be compiled: "
                           + "; ".join(_static_hint(s) for s in unknown)
                           + " (shapes=... in Python), or name the dims (dim_param).")
    source = prepare_for_tvm(source)  # importer_fixes: ONNX-level fixes + extra converters
    missing = unsupported_ops(source)
    if missing:
        listed = ", ".join(f"{op} (node '{n}')" for op, n in sorted(missing.items()))
        if set(missing) <= {"RNN", "GRU", "LSTM", "Scan"}:   # left by importer_fixes
            raise AnychipError(f"{source.label}: {listed}: anychip unrolls recurrent layers "
                               f"over a static sequence length only (at most {MAX_STEPS} "
                               f"steps, and not a reverse direction with sequence_lens); "
                               f"compile with --shape giving the length.")
        raise AnychipError(f"{source.label}: TVM's ONNX importer does not support {listed}; "
                           f"rewrite these ops or run 'anychip conformance' to see what is covered.")
    names = symbolic.input_symbols(source.inputs)
    variables = symbolic.make_vars(names)
    shape_dict = {s.safe_name: symbolic.relax_shape(s.shape, variables) for s in source.inputs}
    dtype_dict = {s.safe_name: s.dtype for s in source.inputs}
    lost: list = []
    _quiet_converter_failures()
    try:
        if names:
            symbolic.shape_values_as_tensors(source.proto)
            symbolic.name_nodes_uniquely(source.proto)
            with symbolic.recover_shapes(source.proto, variables, lost), \
                    _checker_without_weights():
                mod = from_onnx(source.proto, shape_dict=shape_dict, dtype_dict=dtype_dict,
                                keep_params_in_input=keep_params_in_input,
                                sanitize_input_names=False)
        else:
            with _checker_without_weights():
                return from_onnx(source.proto, shape_dict=shape_dict, dtype_dict=dtype_dict,
                                 keep_params_in_input=keep_params_in_input,
                                 sanitize_input_names=False)
    except AnychipError as exc:
        if type(exc) not in (AnychipError, InputsRejected) or str(exc).startswith(source.label):
            raise
        raise type(exc)(f"{source.label}: {exc}") from None   # (a converter's own line)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        if names:
            where = (f" (at node '{lost[-1][0]}' ({lost[-1][1]}))" if lost else "")
            dynamic = [s for s in source.inputs if not s.is_static]
            lows = {n: lo for n, (lo, _) in symbol_bounds(source).items()}
            raise AnychipError(f"{source.label}: the symbolic dims could not be kept through "
                               f"TVM's ONNX importer{where}: {first}; compile static shapes "
                               f"instead: " + "; ".join(_static_hint(s, lows) for s in dynamic)) \
                from exc
        raise AnychipError(f"{source.label}: TVM's ONNX importer failed: {first}. "
                           f"Run 'anychip compare' or report the model.") from exc
    mod = symbolic.outputs_as_tensors(mod)
    bounds = symbol_bounds(source)
    main = mod["main"].with_attr("tir_var_upper_bound", {n: bounds[n][1] for n in names})
    main = main.with_attr("tir_var_lower_bound", {n: bounds[n][0] for n in names})
    mod["main"] = main
    return mod


def _quiet_converter_failures() -> None:
    """A converter that raises inside TVM's from_onnx made two more lines than anychip's one:
    TVM prints "Error converting operator X, with inputs: [...]" to stdout (which corrupts
    --json output), and its BlockBuilder, left with a binding block open by the exception,
    logs "BlockBuilder destroyed with remaining blocks!" from C++ when it is freed at exit.
    anychip's error names the node and the reason, so the print goes (the frontend module's
    `print`) and a function scope left by an exception closes its open block. Installed once."""
    from tvm.relax import block_builder
    from tvm.relax.frontend.onnx import onnx_frontend

    if getattr(onnx_frontend, "print", None) is not _no_print:
        onnx_frontend.print = _no_print
    builder = block_builder.BlockBuilder
    if getattr(builder._exit_function_scope, "anychip_closes_blocks", False):
        return
    original = builder._exit_function_scope

    def exit_function_scope(self, exc_type, exc_val, exc_tb):
        if exc_type is not None:
            with contextlib.suppress(Exception):
                self._end_block()
        return original(self, exc_type, exc_val, exc_tb)

    exit_function_scope.anychip_closes_blocks = True
    builder._exit_function_scope = exit_function_scope


def _no_print(*args, **kwargs) -> None:
    return None


_LIGHT = threading.local()          # .depth > 0: this thread is inside TVM's from_onnx
_INSTALL = threading.Lock()


def _light_checker(real):
    """`onnx.checker.check_model` that checks the light twin of a ModelProto while the calling
    thread is inside `_checker_without_weights`, and is `real` itself everywhere else."""
    import onnx

    def check_model(model, *args, **kwargs):
        if getattr(_LIGHT, "depth", 0) and isinstance(model, onnx.ModelProto):
            twin = light_twin(model)
            model = model if twin is None else twin
        return real(model, *args, **kwargs)

    check_model.anychip_real = real
    return check_model


@contextlib.contextmanager
def _checker_without_weights():
    """TVM's from_onnx first runs `onnx.checker.check_model` on the model it is given and
    turns any finding into a warning; that serialises every weight (1.8 s a target for
    zoo:vgg19's 548 MB). The frontend has run the full checker on the model as given, so
    while TVM imports, the checker sees the model's light twin (compiler/onnx_inference.py:
    the same graph, small constants, the large float weights as typed inputs): the same
    checks of the graph, without a pass over the weights. Per thread: the wrapper installed
    once in onnx.checker is onnx's own checker for any other caller and thread."""
    import onnx.checker

    with _INSTALL:
        if not hasattr(onnx.checker.check_model, "anychip_real"):
            onnx.checker.check_model = _light_checker(onnx.checker.check_model)
    _LIGHT.depth = getattr(_LIGHT, "depth", 0) + 1
    try:
        yield
    finally:
        _LIGHT.depth -= 1


DIMS_KEY = "dims"   # source.extra[...]: {symbol: (lo, hi)} from --dim / dims=


def symbol_bounds(source: ModelSource) -> dict[str, tuple[int, int]]:
    """{symbol: (lo, hi)} for every symbol of the inputs: the user's bounds, else the
    default range (importer_fixes/symbolic.py)."""
    from .importer_fixes import symbolic

    given = source.extra.get(DIMS_KEY) or {}
    names = symbolic.input_symbols(source.inputs)
    extra = sorted(set(given) - set(names))
    if extra:
        raise AnychipError(f"{source.label}: --dim names '{extra[0]}', but the model's symbolic "
                           f"dims are {', '.join(names) or 'none'}.")
    return {n: tuple(int(v) for v in given.get(n, symbolic.default_range(n))) for n in names}


def _static_hint(spec, lows: dict[str, int] | None = None) -> str:
    """'--shape NAME=AxB' that compiles: each symbol at its lower bound (`lows`), else 1."""
    lows = lows or {}

    def size(d) -> str:
        return str(d) if isinstance(d, int) and d > 0 else str(lows.get(d, 1))

    example = "x".join(size(d) for d in spec.shape)
    return f"input '{spec.name}' {list(spec.shape)}: --shape {spec.name}={example or '1'}"

