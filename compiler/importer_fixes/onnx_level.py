"""ONNX-level preparation: rewrites of the model itself, each keeping its meaning, that put it
in a form TVM's importer takes. One function per ONNX behaviour; each docstring names the
behaviour and the conformance cases that prove it. Every function edits `model` in place.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EXPANDED_DOMAIN = "anychip.expanded"

# Element types no anychip target compiles: TVM has no arithmetic for them (strings) or the
# importer cannot hold them (8-bit floats, 4- and 2-bit integers, 4-bit floats).
UNCOMPILABLE_TYPES = {
    TensorProto.STRING: "string",
    TensorProto.FLOAT8E4M3FN: "float8e4m3fn", TensorProto.FLOAT8E4M3FNUZ: "float8e4m3fnuz",
    TensorProto.FLOAT8E5M2: "float8e5m2", TensorProto.FLOAT8E5M2FNUZ: "float8e5m2fnuz",
    TensorProto.UINT4: "uint4", TensorProto.INT4: "int4",
    TensorProto.COMPLEX64: "complex64", TensorProto.COMPLEX128: "complex128",
}
for _name in ("FLOAT4E2M1", "FLOAT8E8M0", "UINT2", "INT2"):
    if hasattr(TensorProto, _name):
        UNCOMPILABLE_TYPES[getattr(TensorProto, _name)] = _name.lower()


def graph_links(graph: onnx.GraphProto) -> tuple[dict, dict]:
    """(producer node by value name, consumer nodes by value name) of one graph's nodes: what
    a pattern rewrite walks."""
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, consumers


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def uncompilable_type(model: onnx.ModelProto) -> str | None:
    """The first element type no target can compile, with where it occurs, or None.

    Covers graph inputs, outputs, initializers and Cast/CastLike targets, so a model with a
    string or float8 tensor anywhere is refused up front rather than failing deep in TVM
    (cases test_cast_FLOAT_to_FLOAT8E4M3FN, test_string_*, test_dequantizelinear_int4...).
    """
    graph = model.graph
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        kind = vi.type.WhichOneof("value")
        if kind == "tensor_type" and vi.type.tensor_type.elem_type in UNCOMPILABLE_TYPES:
            return f"tensor '{vi.name}' has element type " \
                   f"{UNCOMPILABLE_TYPES[vi.type.tensor_type.elem_type]}"
    for init in graph.initializer:
        if init.data_type in UNCOMPILABLE_TYPES:
            return f"initializer '{init.name}' has element type {UNCOMPILABLE_TYPES[init.data_type]}"
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and attr.i in UNCOMPILABLE_TYPES:
                return f"node '{node.name or node.op_type}' ({node.op_type}) casts to " \
                       f"{UNCOMPILABLE_TYPES[attr.i]}"
            if attr.HasField("t") and attr.t.data_type in UNCOMPILABLE_TYPES:
                return f"node '{node.name or node.op_type}' ({node.op_type}) holds a " \
                       f"{UNCOMPILABLE_TYPES[attr.t.data_type]} tensor"
    return None


def inline_local_functions(model: onnx.ModelProto) -> bool:
    """Model-local functions (FunctionProto in model.functions) are inlined with onnx's
    inliner: TVM's importer has no notion of functions. Cases: every `_expanded` case whose
    body the exporter kept as a function, and models exported by torch.onnx with functions."""
    if not model.functions:
        return False
    from onnx import inliner

    # ONNX function bodies are written against an older opset than the model's (Swish's at
    # 24 inside an opset-28 model): the inliner converts them, or it skips them silently.
    try:
        inlined = inliner.inline_local_functions(_inferred(model), convert_version=True)
    except Exception:  # noqa: BLE001 - conversion needs types inference could not give
        inlined = inliner.inline_local_functions(model)
    model.CopyFrom(inlined)
    return True


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    graph = model.graph
    types = {vi.name: vi.type for vi in list(graph.input) + list(graph.value_info)
             + list(graph.output)}
    for init in graph.initializer:
        types.setdefault(init.name, helper.make_tensor_type_proto(init.data_type, init.dims))
    return types


def _function_body(node: onnx.NodeProto, opset: int,
                   types: dict[str, onnx.TypeProto]) -> onnx.FunctionProto | None:
    """The ONNX function body of `node`'s operator at `opset`, or None where it has none."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:  # noqa: BLE001 - unknown op: nothing to expand
        return None
    versions = [v for v in schema.function_opset_versions if v <= opset] if schema.has_function \
        else []
    if versions:
        return onnx.FunctionProto.FromString(schema.get_function_with_opset_version(max(versions)))
    versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset] \
        if schema.has_context_dependent_function else []
    if not versions:
        return None
    inputs = [types.get(name, onnx.TypeProto()).SerializeToString() if name else
              onnx.TypeProto().SerializeToString() for name in node.input]
    try:
        body = schema.get_context_dependent_function_with_opset_version(
            max(versions), node.SerializeToString(), inputs)
    except Exception:  # noqa: BLE001 - the builder needs types we do not know
        return None
    return onnx.FunctionProto.FromString(body) if body else None


def _with_defaults(node: onnx.NodeProto, schema) -> None:
    """The schema's attribute defaults are written on the calling node, so every @ref
    attribute of the body resolves when inlined (the inliner drops unresolved ones)."""
    given = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in given and attr.default_value.name:
            default = onnx.AttributeProto()
            default.CopyFrom(attr.default_value)
            default.name = name
            node.attribute.append(default)


def expand_schema_functions(model: onnx.ModelProto, needs_expansion) -> list[str]:
    """Operators TVM cannot import but ONNX defines as a function of simpler operators
    (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss, CenterCropPad, Celu, Swish, SwiGLU,
    RotaryEmbedding, the window functions, opset-23 Attention...) are replaced by their ONNX
    function body, exactly what ONNX's `_expanded` cases do by hand. Repeated until no node
    needs it (a body can use another function op, e.g. SoftmaxCrossEntropyLoss uses
    NegativeLogLikelihoodLoss). Cases: test_nllloss_*, test_sce_*, test_center_crop_pad_*,
    test_celu, test_swish, test_attention_*, test_rotary_embedding_*, test_hannwindow*.
    Returns the expanded op types."""
    expanded: list[str] = []
    for _round in range(4):
        opset = default_opset(model)
        types = None
        changed = False
        for node in model.graph.node:
            if node.domain not in ("", "ai.onnx") or not needs_expansion(node, opset):
                continue
            if types is None:
                types = _value_types(_inferred(model))
            body = _function_body(node, opset, types)
            if body is None:
                continue
            _with_defaults(node, onnx.defs.get_schema(node.op_type, opset, ""))
            body.domain, body.name = EXPANDED_DOMAIN, f"{node.op_type}_{len(model.functions)}"
            expanded.append(node.op_type)
            node.domain, node.op_type = body.domain, body.name
            model.functions.append(body)
            changed = True
        if not changed:
            break
        if all(o.domain != EXPANDED_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(EXPANDED_DOMAIN, 1))
        inline_local_functions(model)
    kept = [o for o in model.opset_import if o.domain != EXPANDED_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return expanded


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's inferred copy of `model` (one copy of the weights, not four passes over them:
    compiler/onnx_inference.py); `model` itself when inference fails."""
    from anychip.compiler.onnx_inference import inferred_copy

    try:
        return inferred_copy(model, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is a help here, not a requirement
        return model


_CONSTANT_ATTRS = {
    "value_int": lambda a: np.array(a.i, dtype=np.int64),
    "value_ints": lambda a: np.array(list(a.ints), dtype=np.int64),
    "value_float": lambda a: np.array(a.f, dtype=np.float32),
    "value_floats": lambda a: np.array(list(a.floats), dtype=np.float32),
}


def _all_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_graphs(attr.g)
            for sub in attr.graphs:
                yield from _all_graphs(sub)


def constants_as_tensors(model: onnx.ModelProto) -> int:
    """Constant nodes written with value_int, value_ints, value_float or value_floats (ONNX
    opset >= 12) become the equivalent `value` tensor, in the main graph and in subgraphs
    (If branches): TVM's Constant converter reads `value` only. Cases:
    test_constant_value_int*, function bodies (Celu, the losses, AffineGrid's If branches in
    test_affine_grid_*_expanded) that build their constants this way. Returns the count."""
    count = 0
    for node in (n for g in _all_graphs(model.graph) for n in g.node):
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        attr = next((a for a in node.attribute if a.name in _CONSTANT_ATTRS), None)
        if attr is None:
            continue
        value = _CONSTANT_ATTRS[attr.name](attr)
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
        count += 1
    return count


FOLD_MAX_ELEMENTS = 4096
_NOT_FOLDABLE = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                 "Bernoulli", "Multinomial", "If", "Loop", "Scan", "SequenceMap"}


def static_dims(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """{value name: dims} for every value the model's own shape annotations (value_info,
    inputs, outputs, initializers) give a fully static shape; no inference is run."""
    graph = model.graph
    shapes = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if t is not None and t.HasField("shape") and all(d.HasField("dim_value")
                                                          for d in t.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    for init in graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """{value name: dims} for every value ONNX shape inference gives a fully static shape."""
    return {k: list(v) for k, v in static_dims(_inferred(model)).items()}


def ranked_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """{value name: dims} for every value ONNX shape inference gives a rank, a dim it does not
    know as a number (a symbol) as None."""
    graph = _inferred(model).graph
    shapes = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if t is not None and t.HasField("shape"):
            shapes[vi.name] = [int(d.dim_value) if d.HasField("dim_value") else None
                               for d in t.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]
    return shapes


def element_types(model: onnx.ModelProto) -> dict[str, str]:
    """{value name: numpy dtype name} for values whose element type is known."""
    graph = _inferred(model).graph
    types = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            try:
                types[vi.name] = np.dtype(
                    helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)).name
            except Exception:  # noqa: BLE001 - a type numpy cannot hold
                continue
    for init in model.graph.initializer:
        types.setdefault(init.name, np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).name)
    return types


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], opset: int) -> list:
    from onnx.reference import ReferenceEvaluator

    inputs = [n for n in node.input if n]
    graph = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(values[n].dtype),
                                       values[n].shape) for n in inputs],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
         for o in node.output if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, {n: values[n] for n in inputs})


def fold_shape_computations(model: onnx.ModelProto, guard_op: str = "",
                            shape_values: set[str] | None = None) -> int:
    """Shape computations become constants. With static input shapes, `Shape` and `Size` of
    a tensor whose shape ONNX shape inference knows are constants, and so is any node whose
    inputs are all constants (model initializers, Constant nodes, folded shapes) when its
    outputs are small integer or boolean tensors: shape arithmetic (Gather, Concat, Unsqueeze,
    Cast, Slice, Equal, Where... of shapes), and any small result that decides a shape (in
    `shape_values`, e.g. a Cast feeding Range's limit). TVM's importer otherwise hands
    `Shape`'s result around as a Relax ShapeExpr that most converters refuse ("cannot handle
    ShapeExpr inputs"), or returns it as a graph output the runtime cannot give back as a
    tensor, or keeps shapes symbolic (dynamic Expand or Range: slow or failing builds). Other
    float tensors and large values are left to TVM. Graph inputs are never constants; a
    specialised input's guarded value (`guard_op` nodes, see specialise.py) is only used to
    fold values that decide shapes, never the rest of what the model computes. Cases: the
    `_expanded` cases that compute shapes (test_attention_*_expanded, test_layer_norm*_expanded,
    test_group_normalization_*_expanded...), test_shape*, test_size*. Returns nodes folded."""
    opset = default_opset(model)
    values: dict[str, np.ndarray] = {
        i.name: numpy_helper.to_array(i) for i in model.graph.initializer
        if int(np.prod(i.dims)) <= FOLD_MAX_ELEMENTS}
    guarded: set[str] = set()         # values derived from a specialised input
    shape_values = shape_values or set()
    shapes, shapes_after = None, -1
    folded = 0
    new_nodes: list[onnx.NodeProto] = []
    nodes = list(model.graph.node)
    for index, node in enumerate(nodes):
        result = None
        if guard_op and node.op_type == guard_op:
            attr = next(a for a in node.attribute if a.name == "value")
            values[node.output[0]] = numpy_helper.to_array(attr.t)
            guarded.add(node.output[0])
            new_nodes.append(node)
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type in _NOT_FOLDABLE or \
                any(a.HasField("g") or a.graphs for a in node.attribute):
            new_nodes.append(node)
            continue
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None and attr.t.data_type not in UNCOMPILABLE_TYPES:
                values[node.output[0]] = numpy_helper.to_array(attr.t)
            new_nodes.append(node)
            continue
        if node.op_type in ("Shape", "Size") and node.input[0] not in values:
            if shapes is None or (node.input[0] not in shapes and shapes_after < folded):
                shapes, shapes_after = _shapes_so_far(model, new_nodes + nodes[index:]), folded
            dims = shapes.get(node.input[0])
            if dims is not None:
                result = [_shape_value(node, dims)]
        elif node.input and all(n in values for n in node.input if n) and (
                not any(n in guarded for n in node.input)
                or all(o in shape_values for o in node.output if o)):
            try:
                result = _evaluate(node, values, opset)
            except Exception:  # noqa: BLE001 - not foldable by the reference: leave it
                result = None
        decides_shape = all(o in shape_values for o in node.output if o)
        if result is None or len(result) != len([o for o in node.output if o]) or not all(
                isinstance(r, np.ndarray) and r.size <= FOLD_MAX_ELEMENTS
                and (r.dtype.kind in "iub" or (decides_shape and r.dtype.kind == "f"))
                for r in result):
            new_nodes.append(node)
            continue
        tainted = any(n in guarded for n in node.input)
        for name, value in zip([o for o in node.output if o], result):
            values[name] = value
            if tainted:
                guarded.add(name)
            new_nodes.append(helper.make_node("Constant", [], [name], name=f"folded/{name}",
                                              value=numpy_helper.from_array(value)))
        folded += 1
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return folded


def _shapes_so_far(model: onnx.ModelProto, nodes: list) -> dict[str, list[int]]:
    """Static shapes with the constants folded so far (a Pad's output shape is known once
    its pads are)."""
    partial = onnx.ModelProto()
    partial.CopyFrom(model)
    del partial.graph.node[:]
    partial.graph.node.extend(nodes)
    del partial.graph.value_info[:]
    return static_shapes(partial)


def _shape_value(node: onnx.NodeProto, dims: list[int]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(dims)), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    rank = len(dims)
    start = attrs.get("start", 0)
    end = attrs.get("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return np.array(dims[start:end], dtype=np.int64)


_HALF_TYPES = (TensorProto.FLOAT16,)


def attention_in_float32(model: onnx.ModelProto) -> int:
    """ONNX Attention (opset 23+) on float16 inputs is computed in float32 and its
    outputs rounded to the input type once, as ONNX Runtime's kernel computes it and as the
    reference's outputs are (its expansion in half precision rounds the scores, the softmax
    and the products at every step, up to 3e-3 off). Casts go around the node: its float
    inputs (Q, K, V, a float mask, the past cache) to float32, its outputs back. Cases:
    test_attention_4d_fp16, test_attention_4d_causal_fp16,
    test_attention_4d_gqa_with_past_and_present_fp16,
    test_attention_4d_gqa_causal_nonpad_decode_fp16. (Not bfloat16: the reference rounds
    each step to bfloat16 and test_attention_4d_causal_padded_kv_bf16 expects that.) Returns
    nodes rewritten."""
    if default_opset(model) < 23 or not any(n.op_type == "Attention" and n.domain in
                                            ("", "ai.onnx") for n in model.graph.node):
        return 0
    types = {name: t.tensor_type.elem_type for name, t in
             _value_types(_inferred(model)).items() if t.HasField("tensor_type")}
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in model.graph.node:
        half = types.get(node.input[0]) if node.input else None
        if node.op_type != "Attention" or node.domain not in ("", "ai.onnx") or \
                half not in _HALF_TYPES:
            nodes.append(node)
            continue
        rewritten += 1
        for i, name in enumerate(node.input):
            if name and types.get(name) in _HALF_TYPES:
                wide = f"{name}__f32_{rewritten}"
                nodes.append(helper.make_node("Cast", [name], [wide], to=TensorProto.FLOAT,
                                              name=f"attention_f32/{wide}"))
                node.input[i] = wide
        outs = list(node.output)
        for i, name in enumerate(outs):
            if name:
                wide = f"{name}__f32"
                node.output[i] = wide
        nodes.append(node)
        for name, wide in zip(outs, node.output):
            if name:
                nodes.append(helper.make_node("Cast", [wide], [name], to=types.get(name, half),
                                              name=f"attention_f32/{name}"))
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return rewritten
