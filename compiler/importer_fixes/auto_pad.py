"""Conv / MaxPool / AveragePool with auto_pad SAME_UPPER, SAME_LOWER or VALID as explicit pads.

TVM 0.27's converter computes SAME padding as a separate TE pad kernel before the op (a
call_tir, opaque to the passes that work on Relax operators): between NHWC convolutions it got
a transpose to NCHW and back, and the pad was one more copy of the activation. Models exported
from TensorFlow (tf2onnx writes SAME as auto_pad) have one per strided layer. Relax's conv2d
and pools take asymmetric padding, so the spec's pads are written on the node instead.

The spec: each spatial axis gets `out = ceil(in / stride)` and a total pad of
`max(0, (out - 1) * stride + (k - 1) * dilation + 1 - in)`, the odd one at the end for
SAME_UPPER and at the beginning for SAME_LOWER; VALID pads nothing. Static spatial sizes give
constant pads; symbolic ones (a dynamic image size) a Pad computed at run time in front
(`_runtime_pad_nodes`). An AveragePool or MaxPool with ceil_mode=1 is left (explicit pads and
ceil_mode can give one more output than auto_pad's ceil(in / stride)).
"""

from __future__ import annotations

import onnx
from onnx import helper

OPS = ("Conv", "MaxPool", "AveragePool")


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def explicit_auto_pads(model: onnx.ModelProto) -> int:
    """Rewrite the main graph's auto_pad nodes (see the module docstring); returns how many."""
    nodes = [n for n in model.graph.node if n.op_type in OPS and any(
        a.name == "auto_pad" and helper.get_attribute_value(a) not in (b"NOTSET", "NOTSET")
        for a in n.attribute)]
    if not nodes:
        return 0
    from .onnx_level import ranked_shapes

    dims = ranked_shapes(model)   # a symbolic dim as None
    types: dict[str, str] = {}     # element types, inferred once if a runtime pad needs them
    done = 0
    inserted: dict[int, list] = {}
    for index, node in enumerate(nodes):
        pads = _pads(node, dims)
        if pads is None:
            rank = len(dims.get(node.input[0]) or [])
            pad_nodes = _runtime_pad_nodes(model, node, dims, types)
            if pad_nodes is None:
                continue
            inserted[id(node)] = pad_nodes
            pads = [0] * (2 * (rank - 2))
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(helper.make_attribute("pads", pads))
        done += 1
    if inserted:
        order = []
        for node in model.graph.node:
            order += inserted.get(id(node), [])
            order.append(node)
        del model.graph.node[:]
        model.graph.node.extend(order)
    return done


def _runtime_pad_nodes(model, node, dims, types: dict) -> list | None:
    """SAME padding over a symbolic spatial dim with a stride over 1, where the pads depend on
    the size modulo the stride (a TensorFlow export with a dynamic image size): ONNX nodes that
    compute the spec's pads from Shape(x) and a Pad in front of the node (which then pads
    nothing); TVM's converter failed on the symbolic extent ("Cannot use and / or / not
    operator to Expr"). Conv pads with 0, MaxPool with -inf (every SAME window holds at least
    one real element), an AveragePool with count_include_pad=1 with 0; one that does not count
    the pad is left to TVM. The Pad's widths are symbolic dims (converters.py)."""
    import numpy as np
    from onnx import numpy_helper

    attrs = _attrs(node)
    mode = attrs.get("auto_pad")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    shape = dims.get(node.input[0])
    if mode not in ("SAME_UPPER", "SAME_LOWER") or attrs.get("ceil_mode", 0) or not shape \
            or len(shape) < 3:
        return None
    if node.op_type == "AveragePool" and not attrs.get("count_include_pad", 0):
        return None
    n = len(shape) - 2
    kernel = attrs.get("kernel_shape")
    if kernel is None and node.op_type == "Conv" and len(node.input) > 1:
        weight = dims.get(node.input[1])
        kernel = weight[2:] if weight and None not in weight[2:] else None
    if kernel is None or len(kernel) != n:
        return None
    strides = attrs.get("strides") or [1] * n
    dilations = attrs.get("dilations") or [1] * n
    if not types:
        from .onnx_level import element_types

        types.update(element_types(model))
    dtype = types.get(node.input[0], "float32")
    if node.op_type == "MaxPool" and not dtype.startswith(("float", "bfloat")):
        return None
    fill = -np.inf if node.op_type == "MaxPool" else 0
    tag = f"{node.name or node.output[0]}/same_pads"
    const = {"start": [2], "end": [2 + n], "stride": list(strides), "one": [1],
             "span": [(k - 1) * d + 1 for k, d in zip(kernel, dilations)], "zero": [0],
             "two": [2], "outer": [0, 0]}
    names = {k: f"{tag}/{k}" for k in const}
    model.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), names[k])
                                   for k, v in const.items())
    value = f"{tag}/value"
    model.graph.initializer.append(numpy_helper.from_array(np.array(fill, dtype), value))

    def make(op, inputs, out, **kw):
        return helper.make_node(op, inputs, [f"{tag}/{out}"], name=f"{tag}/{out}", **kw)

    t = lambda x: f"{tag}/{x}"   # noqa: E731 - the names of this rewrite's values
    nodes = [make("Shape", [node.input[0]], "shape"),
             make("Slice", [t("shape"), names["start"], names["end"]], "size"),
             make("Add", [t("size"), names["stride"]], "a"),             # ceil(size / stride)
             make("Sub", [t("a"), names["one"]], "b"),
             make("Div", [t("b"), names["stride"]], "out"),
             make("Sub", [t("out"), names["one"]], "c"),
             make("Mul", [t("c"), names["stride"]], "d"),
             make("Add", [t("d"), names["span"]], "e"),
             make("Sub", [t("e"), t("size")], "f"),
             make("Max", [t("f"), names["zero"]], "total"),
             make("Div", [t("total"), names["two"]], "small"),
             make("Sub", [t("total"), t("small")], "large")]
    first, last = ("small", "large") if mode == "SAME_UPPER" else ("large", "small")
    nodes += [make("Concat", [names["outer"], t(first), names["outer"], t(last)], "pads",
                   axis=0),
              make("Pad", [node.input[0], t("pads"), value], "padded")]
    node.input[0] = t("padded")
    return nodes


def _pads(node, dims) -> list[int] | None:
    attrs = _attrs(node)
    mode = attrs["auto_pad"]
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("SAME_UPPER", "SAME_LOWER", "VALID") or attrs.get("ceil_mode", 0):
        return None
    shape = dims.get(node.input[0])
    if not shape or len(shape) < 3:
        return None
    spatial = shape[2:]
    if mode == "VALID":
        return [0] * (2 * len(spatial))
    strides = attrs.get("strides") or [1] * len(spatial)
    if any(d is None and s != 1 for d, s in zip(spatial, strides)):
        return None     # pads that depend on the size: _runtime_pad_nodes
    # stride 1: out = in, the total pad is (k - 1) * dilation whatever the size
    spatial = [1 if d is None else d for d in spatial]
    kernel = attrs.get("kernel_shape")
    if kernel is None and node.op_type == "Conv" and len(node.input) > 1:
        weight = dims.get(node.input[1])
        kernel = weight[2:] if weight and None not in weight[2:] else None
    if kernel is None or len(kernel) != len(spatial):
        return None
    dilations = attrs.get("dilations") or [1] * len(spatial)
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end
