"""The graph the chip runs: the ONNX model with the precision mode's dtypes made explicit.

ATC picks a dtype per node (placement.py) and puts Cast nodes where a float16 region meets a
float32 one. `simulated_model` does the same on a copy of the ONNX model: each node computes
in its placed dtype, casts are inserted only at dtype boundaries (one per tensor and dtype),
float constants feeding a lowered node are converted at compile time, and the graph's inputs
and outputs keep their dtypes. TVM imports that graph, so the simulator computes what the chip
computes, op by op; the cube's fp32 accumulation is added at the Relax level (cube.py).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from anychip.compiler.errors import AnychipError
from anychip.compiler.onnx_inference import infer_shapes

from .placement import FLOATS, NodePlacement, accepts, opset_of, schema_of, tensor_types

# TVM's ONNX converters that reject float16 (LRN multiplies by a float32 constant): the
# simulator runs them in float32 on float16-rounded inputs and rounds their outputs to float16.
TVM_FLOAT32_ONLY = frozenset({"LRN"})

_ONNX_TYPE = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16,
              "bfloat16": onnx.TensorProto.BFLOAT16, "float64": onnx.TensorProto.DOUBLE}


def _np_cast(array: np.ndarray, dtype: str, name: str = "",
             saturated: list | None = None) -> np.ndarray:
    """A constant in the placed dtype. Finite values beyond the format's range become inf, as
    the chip's conversion makes them: each such tensor is recorded in `saturated` (name,
    count, largest magnitude) instead of numpy's bare "overflow encountered in cast", which
    names no tensor."""
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "bfloat16":
            import ml_dtypes

            out = array.astype(ml_dtypes.bfloat16)
        else:
            out = array.astype(dtype)
    if saturated is not None and array.dtype.kind == "f" and out.size and \
            _may_saturate(array, out.dtype):
        over = np.isinf(out.astype(np.float32)) & np.isfinite(array)
        if over.any():
            saturated.append({"tensor": name, "dtype": dtype, "values": int(over.sum()),
                              "max_abs": float(np.abs(array[over]).max())})
    return out


def _may_saturate(array: np.ndarray, dtype) -> bool:
    """Whether a finite value of `array` may become inf in `dtype`. Rounding is monotonic, so
    only if its largest magnitude does: two reductions instead of converting the whole tensor
    back (vgg19's 548 MB of weights). An inf or NaN in `array` leaves it to the full check."""
    with np.errstate(over="ignore", invalid="ignore"):
        top = np.maximum(-array.min(), array.max())   # NaN propagates
        if not np.isfinite(top):
            return True
        return bool(np.isinf(np.asarray(top, array.dtype).astype(dtype).astype(np.float32)))


def _drop_unread(graph) -> None:
    """Initializers that nothing reads any more leave the simulated graph: a weight whose
    every reader now takes its placed dtype (under force_fp16, all of vgg19's 548 MB of
    float32 weights) would only be converted to a tensor by TVM's importer and never used.
    Graph inputs and outputs, and what subgraphs read, stay. Deleted in place: the kept
    weights are not copied."""
    read = {o.name for o in graph.output} | {i.name for i in graph.input}
    for node in graph.node:
        read.update(node.input)
        read.update(_outer_names(node))
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name not in read:
            del graph.initializer[index]


def _outer_names(node) -> set[str]:
    """Tensor names the node's subgraphs (If/Loop/Scan bodies) read, at any depth."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for graph in graphs:
            for inner in graph.node:
                names.update(n for n in inner.input if n)
                names.update(_outer_names(inner))
    return names


def simulated_model(model: onnx.ModelProto, placements: list[NodePlacement],
                    label: str = "model", saturated: list | None = None) -> onnx.ModelProto:
    """A copy of `model` whose nodes compute in their placed dtypes (see the module docstring).
    Constants that saturate in their new dtype are appended to `saturated` (see _np_cast)."""
    out = copy.deepcopy(model)
    graph = out.graph
    types = tensor_types(model)
    opset = opset_of(model)
    inits = {i.name: i for i in graph.initializer}
    # versions[tensor][dtype] = name of that tensor in that dtype
    versions: dict[str, dict[str, str]] = {}
    producer_dtype: dict[str, str] = {}
    nodes = []
    new_inits = []

    def _get(name: str, dtype: str) -> str:
        have = versions.setdefault(name, {})
        if dtype in have:
            return have[dtype]
        if name in inits and name not in producer_dtype:
            new = f"{name}__{dtype}"
            array = numpy_helper.to_array(inits[name])
            new_inits.append(numpy_helper.from_array(_np_cast(array, dtype, name, saturated),
                                                     new))
            have[dtype] = new
            return new
        source_dtype = producer_dtype.get(name, types.get(name, ""))
        source = have.get(source_dtype, name)
        new = name if dtype == types.get(name) else f"{name}__{dtype}"
        nodes.append(helper.make_node("Cast", [source], [new], to=_ONNX_TYPE[dtype],
                                      name=f"{new}__cast"))
        have[dtype] = new
        return new

    for node, place in zip(list(graph.node), placements):
        for name in _outer_names(node):      # subgraphs read outer tensors by their own name
            if name in producer_dtype:
                _get(name, types[name])
        lowered = place.dtype is not None and place.dtype != place.dtype_in and \
            place.unit in ("cube", "vector")
        schema = schema_of(node, opset) if lowered else None
        emulated = lowered and node.op_type in TVM_FLOAT32_ONLY
        if emulated:
            lowered = False
        for i, name in enumerate(node.input):
            if not name or types.get(name) not in FLOATS:
                continue
            want = place.dtype if lowered and accepts(schema, i, place.dtype) else types[name]
            node.input[i] = _get(name, want) if (want != types[name] or
                                                 name in producer_dtype) else name
        for i, name in enumerate(node.output):
            if not name or types.get(name) not in FLOATS:
                continue
            if lowered and types[name] == place.dtype_in and accepts(schema, i, place.dtype, True):
                new = f"{name}__{place.dtype}"
                node.output[i] = new
                producer_dtype[name] = place.dtype
                versions[name] = {place.dtype: new}
            elif emulated and types[name] == place.dtype_in:
                raw = f"{name}__raw"
                node.output[i] = raw
                rounded = f"{name}__{place.dtype}"
                nodes.append(node)
                node = helper.make_node("Cast", [raw], [rounded], to=_ONNX_TYPE[place.dtype],
                                        name=f"{rounded}__cast")
                producer_dtype[name] = place.dtype
                versions[name] = {place.dtype: rounded}
        nodes.append(node)
    # graph outputs keep their name and dtype
    for vi in graph.output:
        if vi.name in producer_dtype:
            _get(vi.name, types[vi.name])
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    _drop_unread(graph)
    del graph.value_info[:]
    try:   # onnx's strict inference, without a pass over the weights (onnx_inference.py)
        return infer_shapes(out, strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError with the node in the text
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise AnychipError(f"{label}: the precision-annotated graph is inconsistent ({first}); "
                           f"try --precision-mode must_keep_origin_dtype and report the model."
                           ) from exc
