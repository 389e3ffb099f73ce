"""Frontends: a model given as .onnx path, ModelProto, bytes, torch.nn.Module or 'zoo:NAME'
becomes a checked, shape-inferred ONNX model with C-identifier input/output names.

The original model is kept as well: verification runs ONNX Runtime on it (docs/architecture.md).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .rebatch import check_rows, new_batch, unbake_batch
from .dim_labels import RENAMED_DIMS_KEY, rename_opaque_labels
from .equal_dims import MERGED_DIMS_KEY, bounds_after_merge, merge_input_symbols
from .errors import AnychipError, error_line
from .limits import MAX_ACTIVATION_BYTES
from .names import sanitize_io_names
from .onnx_inference import infer_shapes
from .tensor_spec import TensorSpec  # re-exported: callers import it from here
from .onnx_safety import (
    check_limits,
    data_propagation_is_cheap,
    check_model_file,
    check_planned_memory,
    check_strings,
    check_tensors,
    iter_graphs,
    iter_node_lists,
)

MAX_PROTOBUF = 2**31  # onnx cannot hold a single protobuf over 2 GiB in memory


@dataclass
class ModelSource:
    """A loaded model: `original` for the reference, `proto` (sanitized names) for the compiler."""

    label: str
    original: onnx.ModelProto
    proto: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)


def _invalid(label: str, why: str) -> AnychipError:
    return AnychipError(f"{label}: not a valid ONNX model ({why}); check the file or re-export "
                        f"it with torch.onnx.export.")


def read_onnx_file(path: str | Path) -> tuple[onnx.ModelProto, Path]:
    """Parse a file without following external data; refuse empty, garbage and >2 GiB files."""
    path = Path(path)
    label = str(path)
    size = check_model_file(path, label)   # regular file, size known: before any read
    if size == 0:
        raise _invalid(label, "the file is empty")
    try:
        with open(path, "rb") as fh:
            model = onnx.load_from_string(fh.read(size + 1))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise _invalid(label, f"protobuf parse failed: {str(exc).splitlines()[0][:120]}") from exc
    return model, path.parent


def _check_structure(model: onnx.ModelProto, label: str) -> None:
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise _invalid(label, "no graph or no nodes")
    if model.ir_version > onnx.IR_VERSION:
        raise AnychipError(f"{label}: IR version {model.ir_version} is newer than this onnx "
                           f"package supports ({onnx.IR_VERSION}); upgrade onnx or re-export.")
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > newest:
            raise AnychipError(f"{label}: opset {opset.version} is newer than supported "
                               f"({newest}); re-export with opset <= {newest}.")
    local = {(f.domain, f.name): f for f in model.functions}
    unknown = {}
    for nodes in iter_node_lists(model, label):
        for node in nodes:
            key = (node.domain, node.op_type)
            if key in local:
                _check_call(node, local[key], label)
                continue
            if onnx.defs.has(node.op_type, node.domain or ""):
                continue
            unknown.setdefault(key, node.name or "(unnamed)")
    if unknown:
        listed = ", ".join(f"{d + '.' if d else ''}{op} (node '{n}')"
                           for (d, op), n in sorted(unknown.items()))
        raise AnychipError(f"{label}: unknown operators: {listed}; they are not in the ONNX "
                           f"standard or any known domain. Replace them or export with standard ops.")


def _check_call(node: onnx.NodeProto, function: onnx.FunctionProto, label: str) -> None:
    """A call of a model-local function passes at most its formal inputs and outputs (the
    checker does not look; onnx's inliner asserts later, inside the compile)."""
    for what, given, formal in (("inputs", node.input, function.input),
                                ("outputs", node.output, function.output)):
        if len(given) > len(formal):
            raise AnychipError(f"{label}: node '{node.name or '(unnamed)'}' calls function "
                               f"'{function.name}' with {len(given)} {what}, but it declares "
                               f"{len(formal)}; fix the node or the function.")


def _first_line(exc: Exception) -> str:
    line = error_line(exc, last=False, limit=400)
    match = _NODE_ERROR.search(line)
    if match:  # onnx's "(op_type:Conv, node name: c1): [ShapeInferenceError] why" -> readable
        return f"node '{match['node']}' ({match['op']}): {match['why'].strip()}; fix or re-export the model"
    return line


_NODE_ERROR = re.compile(r"\(op_type:(?P<op>[^,]+), node name: (?P<node>[^)]*)\): "
                         r"(?:\[\w+\] )?(?P<why>.*)$")


def check_and_infer(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """Full ONNX checker plus strict shape inference, written into `model` (returned); one-line
    errors. The inference runs without the large weights (compiler/onnx_inference.py): the
    checker's is the only pass over them."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise AnychipError(f"{label}: ONNX checker: {_first_line(exc)}") from exc
    try:
        return infer_shapes(model, check_type=True, strict_mode=True,
                            data_prop=data_propagation_is_cheap(model))
    except Exception as exc:
        raise AnychipError(f"{label}: shape inference failed: {_first_line(exc)}") from exc


def _dims(vi: onnx.ValueInfoProto) -> tuple:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return ()
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return tuple(out)


def _dtype(vi: onnx.ValueInfoProto, label: str) -> str:
    if not vi.type.HasField("tensor_type"):
        raise AnychipError(f"{label}: graph input/output '{vi.name}' is not a tensor "
                           f"(sequence/optional/map); only tensor I/O is supported.")
    elem = vi.type.tensor_type.elem_type
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name
    except Exception:
        return helper.tensor_dtype_to_string(elem).replace("TensorProto.", "").lower()


def apply_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], label: str) -> None:
    """Set static input shapes given by --shape NAME=1x3x224x224, in place."""
    inputs = {vi.name: vi for vi in model.graph.input}
    del model.graph.value_info[:]  # intermediate and output shapes are re-inferred from the
    for out in model.graph.output:  # new input shapes
        for i, dim in enumerate(out.type.tensor_type.shape.dim):
            dim.dim_param = f"{out.name}_dim{i}"
    for name, shape in shapes.items():
        if name not in inputs:
            raise AnychipError(f"{label}: --shape names input '{name}', but the inputs are "
                               f"{', '.join(graph_inputs(model))}.")
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) not in (0, len(shape)) :
            raise AnychipError(f"{label}: --shape {name} has rank {len(shape)}, the model says "
                               f"{len(dims)}.")
        del dims[:]
        for value in shape:
            dims.add().dim_value = int(value)


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits]


def prepare(model: onnx.ModelProto, label: str, base_dir: Path | None,
            shapes: dict[str, tuple[int, ...]] | None = None,
            value_ranges: dict[str, tuple[float, float]] | None = None) -> ModelSource:
    """Check, load external data safely, apply shapes, infer shapes, sanitize names."""
    check_strings(model, label)
    check_limits(model, label)
    _check_structure(model, label)
    check_tensors(model, base_dir, label)
    if base_dir is not None and any(t.data_location == onnx.TensorProto.EXTERNAL
                                    for g in iter_graphs(model, label) for t in g.initializer):
        onnx.external_data_helper.load_external_data_for_model(model, str(base_dir))
    rebatched, before = [], None
    if shapes:
        batches = new_batch(model, shapes)
        if batches is not None:
            before = copy.deepcopy(model)
        apply_shapes(model, shapes, label)
        if before is not None:   # Reshapes that bake the old batch follow the new one
            before = check_and_infer(before, label)
            rebatched = unbake_batch(model, before, batches[0])
    from . import progress

    renamed = rename_opaque_labels(model)   # 'a:b', '0', 'past + 1' -> C identifiers
    if renamed:
        progress.note(f"anychip: {label}: input dim labels compiled as symbols "
                      + ", ".join(f"'{a}' -> '{b}'" for a, b in renamed.items()))
    merged = merge_input_symbols(model)   # dims the graph broadcasts together: one symbol
    if merged:
        progress.note(f"anychip: {label}: the graph requires input dims "
                      + ", ".join(f"'{a}' = " + (str(b) if isinstance(b, int) else f"'{b}'")
                                  for a, b in merged.items())
                      + "; compiled so (inputs where they differ are refused)")
    original = check_and_infer(model, label)
    check_planned_memory(original, label, MAX_ACTIVATION_BYTES, "this host")
    value_ranges = value_ranges or {}
    proto = copy.deepcopy(original)
    mapping = sanitize_io_names(proto)
    by_name = {vi.name: vi for vi in original.graph.input}
    inputs = [TensorSpec(n, mapping[n], _dims(by_name[n]), _dtype(by_name[n], label),
                         value_ranges.get(n)) for n in graph_inputs(original)]
    from .inputs import integer_input_ranges  # ids over the embedding's rows, masks 0/1

    found = integer_input_ranges(original, inputs)
    inputs = [s if s.value_range is not None or s.name not in found
              else dataclasses.replace(s, value_range=found[s.name]) for s in inputs]
    outputs = [TensorSpec(vi.name, mapping[vi.name], _dims(vi), _dtype(vi, label))
               for vi in original.graph.output]
    if rebatched:
        check_rows(before, original, inputs, label, rebatched)
    digest = hashlib.sha256(original.SerializeToString(deterministic=True)).hexdigest()
    extra = {key: value for key, value in ((RENAMED_DIMS_KEY, renamed), (MERGED_DIMS_KEY, merged))
             if value}
    return ModelSource(label, original, proto, inputs, outputs, digest, extra)


def load_model(model: Any, example_inputs: tuple | None = None,
               shapes: dict[str, tuple[int, ...]] | None = None,
               dims: dict[str, tuple[int, int]] | None = None) -> ModelSource:
    """Any supported model form -> ModelSource (checked, shapes inferred, names sanitized).

    `dims` bounds symbolic dims ({"seq": (1, 2048)}); it is kept in `extra["dims"]` for the
    importer, which refuses a name that is not a symbol of the inputs."""
    source = _load_model(model, example_inputs, shapes)
    if dims:
        renamed = source.extra.get(RENAMED_DIMS_KEY) or {}
        merged = source.extra.get(MERGED_DIMS_KEY) or {}
        aliases = {old: merged.get(new, new) for old, new in renamed.items()} | merged
        source.extra["dims"] = bounds_after_merge(check_dims(dims, source.label), aliases,
                                                  source.label)
    return source


def check_dims(dims: dict, label: str) -> dict[str, tuple[int, int]]:
    """{name: (lo, hi)} with 1 <= lo <= hi, else one line naming the symbol."""
    out = {}
    for name, bounds in dims.items():
        try:
            lo, hi = (int(b) for b in bounds)
        except (TypeError, ValueError):
            raise AnychipError(f"{label}: dims['{name}'] must be (LO, HI), got {bounds!r}.") \
                from None
        if not 1 <= lo <= hi:
            raise AnychipError(f"{label}: bounds of '{name}' must satisfy 1 <= LO <= HI, got "
                               f"{lo}..{hi}.")
        out[str(name)] = (lo, hi)
    return out


def _load_model(model: Any, example_inputs: tuple | None = None,
                shapes: dict[str, tuple[int, ...]] | None = None) -> ModelSource:
    if isinstance(model, ModelSource):
        return model
    if isinstance(model, (str, Path)) and str(model).startswith("zoo:"):
        from anychip import models as zoo

        built = zoo.build(str(model)[4:])
        # its graph bakes the export's batch into reshapes: exported again at the new one
        batches = new_batch(built.proto, shapes or {}) if built.example_inputs else None
        if batches is not None:
            built = zoo.build(str(model)[4:], batch=batches[1])
        return prepare(copy.deepcopy(built.proto), str(model), None, shapes,
                       getattr(built, "input_ranges", None))
    if isinstance(model, (str, Path)):
        proto, base = read_onnx_file(model)
        return prepare(proto, str(model), base, shapes)
    if isinstance(model, (bytes, bytearray)):
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as exc:
            raise _invalid("<bytes>", _first_line(exc)) from exc
        return prepare(proto, "<bytes>", None, shapes)
    if isinstance(model, onnx.ModelProto):
        return prepare(copy.deepcopy(model), f"<ModelProto {model.graph.name}>", None, shapes)
    if _is_torch_module(model):
        if example_inputs is None:
            raise AnychipError(f"{type(model).__name__}: a torch module needs example_inputs=(...) "
                               f"to be exported to ONNX.")
        from .torch_export import export_torch

        proto = export_torch(model, tuple(example_inputs))
        return prepare(proto, f"<torch {type(model).__name__}>", None, shapes)
    raise AnychipError(f"cannot compile a {type(model).__name__}: give an .onnx path, an "
                       f"onnx.ModelProto, a torch.nn.Module with example_inputs, or zoo:NAME.")


def _is_torch_module(obj: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(obj, torch.nn.Module)
