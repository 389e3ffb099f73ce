"""Input dims the graph requires to be equal, compiled as one symbol.

Exporters name each input's dims on their own: `input_ids [batch, seq]` and `attention_mask
[batch_size, sequence_length]` (torch.onnx's dynamic_axes per input, older Hugging Face
exports). The graph then adds the mask to the attention scores, which broadcasts `seq`
against `sequence_length`; ONNX only allows that where they are equal (or one is 1), and
Relax, which cannot prove them equal, gives the sum an unknown shape that no kernel is built
for. ONNX Runtime's symbolic shape inference (onnxruntime.tools.symbolic_shape_infer, with
`auto_merge`) finds which input symbols the graph merges this way; each group is renamed to
its first-named symbol before anything else reads the model, so the compiled program, the
manifest, `--dim` and verify all see one symbol, and inputs where they differ are refused
in one line before the run ("inputs sharing a symbol must agree") instead of the compile
failing. A symbol the graph requires equal to a size (an input [2, n] multiplied by a [2, 2]
weight, a MatMul's contraction over a symbolic width) is made that size: the model has one
valid size there, and verify then tests it. The broadcast of a size-1 input against the other
(legal ONNX) is refused too: compile that case with static shapes.

Best effort: a model the inference tool cannot read (an op it does not know) is left as it
is; the importer then casts the second symbol's operand to the first's
(importer_fixes/symbolic.reconcile_dims), checked by the program at every call."""

from __future__ import annotations

import onnx
import onnx.inliner

# source.extra[...]: {merged symbol: the symbol it was renamed to, or the size it is fixed at}
MERGED_DIMS_KEY = "merged_dims"
# weights above this many elements are given to the inference as shapes only (graph inputs):
# it needs the values of shape tensors (Reshape targets, Slice bounds), never of weights
_MAX_VALUE_ELEMENTS = 4096


def merge_input_symbols(model: onnx.ModelProto) -> dict[str, str | int]:
    """Rename, in `model`'s graph inputs, each input symbol the graph requires equal to
    another to the group's first-named one, and make static each one it requires equal to a
    size (`[2, n] * [2, 2]`: n is 2); returns {merged name: kept name, or the size} ({} when
    none)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    order = _symbols(inputs)
    if not order:
        return {}
    inferred = _inferred_inputs(model)
    if inferred is None:
        return {}
    parent = {name: name for name in order}
    sizes: dict[str, int] = {}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for vi in inputs:
        after = inferred.get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        if after is None or len(after) != len(dims):
            continue
        for dim, new in zip(dims, after):
            if dim.dim_param not in parent:
                continue
            if isinstance(new, int) and new > 0:
                sizes[dim.dim_param] = new
            elif new in parent:
                a, b = sorted((root(dim.dim_param), root(new)), key=order.index)
                parent[b] = a
    for name, size in list(sizes.items()):
        sizes[root(name)] = size
    merged: dict[str, str | int] = {}
    for name in order:
        if root(name) in sizes:
            merged[name] = sizes[root(name)]
        elif root(name) != name:
            merged[name] = root(name)
    for vi in inputs:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param in merged:
                kept = merged[dim.dim_param]
                if isinstance(kept, int):
                    dim.dim_value = kept   # clears the dim_param (a oneof)
                else:
                    dim.dim_param = kept
    return merged


def bounds_after_merge(dims: dict[str, tuple[int, int]], merged: dict[str, str | int],
                       label: str) -> dict[str, tuple[int, int]]:
    """The user's bounds ({symbol: (lo, hi)}) with merged symbols' bounds moved to the kept
    symbol; bounds given for both must overlap (their intersection is used); a symbol the
    graph fixes to a size needs no bounds, and bounds that exclude the size are refused."""
    from .errors import AnychipError

    out: dict[str, tuple[int, int]] = {}
    for name, (lo, hi) in dims.items():
        kept = merged.get(name, name)
        if isinstance(kept, int):
            if not lo <= kept <= hi:
                raise AnychipError(f"{label}: the graph fixes '{name}' at {kept} (it is joined "
                                   f"or broadcast with a dim of that size), outside the "
                                   f"bounds {lo}..{hi} given for it.")
            continue
        if kept in out:
            lo, hi = max(lo, out[kept][0]), min(hi, out[kept][1])
            if lo > hi:
                raise AnychipError(f"{label}: '{name}' is the same dim as '{kept}' (the graph "
                                   f"broadcasts them together), but their bounds do not "
                                   f"overlap; give one range.")
        out[kept] = (lo, hi)
    return out


def _symbols(inputs) -> list[str]:
    """The inputs' dim_params in order of first appearance."""
    seen: list[str] = []
    for vi in inputs:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param and dim.dim_param not in seen:
                seen.append(dim.dim_param)
    return seen


def _inferred_inputs(model: onnx.ModelProto) -> dict[str, list[str | int | None]] | None:
    """{input: [its dims' names (or sizes) after ONNX Runtime's merging]}, None when the
    tool fails."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except Exception:  # noqa: BLE001 - an ONNX Runtime build without its tools (or sympy)
        return None
    light = _without_weights(model)
    try:
        if light.functions:   # the tool does not look inside model-local functions
            light = onnx.inliner.inline_local_functions(light)
        out = SymbolicShapeInference.infer_shapes(light, auto_merge=True,
                                                  guess_output_rank=True, verbose=0)
    except Exception:  # noqa: BLE001 - best effort: any op or graph the tool cannot read
        return None
    if out is None:
        return None
    return {vi.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in vi.type.tensor_type.shape.dim]
            for vi in out.graph.input}


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model`'s graph (no weights copied) whose large initializers are graph
    inputs of their shape and type, and without the inferred shapes of intermediates."""
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph, source = light.graph, model.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    listed = {vi.name for vi in source.input}
    for tensor in source.initializer:
        elements = 1
        for d in tensor.dims:
            elements *= d
        if elements <= _MAX_VALUE_ELEMENTS:
            graph.initializer.append(tensor)
        elif tensor.name not in listed:
            graph.input.append(onnx.helper.make_tensor_value_info(
                tensor.name, tensor.data_type, list(tensor.dims)))
    return light
