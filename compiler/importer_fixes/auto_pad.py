"""Conv / MaxPool / AveragePool with auto_pad SAME_UPPER, SAME_LOWER or VALID as explicit pads.

TVM 0.27's converter computes SAME padding as a separate TE pad kernel before the op (a
call_tir, opaque to the passes that work on Relax operators): between NHWC convolutions it got
a transpose to NCHW and back, and the pad was one more copy of the activation. Models exported
from TensorFlow (tf2onnx writes SAME as auto_pad) have one per strided layer. Relax's conv2d
and pools take asymmetric padding, so the spec's pads are written on the node instead.

The spec: each spatial axis gets `out = ceil(in / stride)` and a total pad of
`max(0, (out - 1) * stride + (k - 1) * dilation + 1 - in)`, the odd one at the end for
SAME_UPPER and at the beginning for SAME_LOWER; VALID pads nothing. Only nodes whose input's
spatial sizes are static are taken; an AveragePool or MaxPool with ceil_mode=1 is left
(explicit pads and ceil_mode can give one more output than auto_pad's ceil(in / stride)).
"""

from __future__ import annotations

import onnx
from onnx import helper

OPS = ("Conv", "MaxPool", "AveragePool")


def _spatial_dims(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """{value name: dims}, a symbolic dim as None, from ONNX shape inference."""
    from .onnx_level import _inferred

    graph = _inferred(model).graph
    dims = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if t is not None and t.HasField("shape"):
            dims[vi.name] = [int(d.dim_value) if d.HasField("dim_value") else None
                             for d in t.shape.dim]
    for init in model.graph.initializer:
        dims[init.name] = [int(d) for d in init.dims]
    return dims


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def explicit_auto_pads(model: onnx.ModelProto) -> int:
    """Rewrite the main graph's auto_pad nodes (see the module docstring); returns how many."""
    nodes = [n for n in model.graph.node if n.op_type in OPS and any(
        a.name == "auto_pad" and helper.get_attribute_value(a) not in (b"NOTSET", "NOTSET")
        for a in n.attribute)]
    if not nodes:
        return 0
    dims = _spatial_dims(model)
    done = 0
    for node in nodes:
        pads = _pads(node, dims)
        if pads is None:
            continue
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(helper.make_attribute("pads", pads))
        done += 1
    return done


def _pads(node, dims) -> list[int] | None:
    attrs = _attrs(node)
    mode = attrs["auto_pad"]
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("SAME_UPPER", "SAME_LOWER", "VALID") or attrs.get("ceil_mode", 0):
        return None
    shape = dims.get(node.input[0])
    if not shape or len(shape) < 3 or any(d is None for d in shape[2:]):
        return None
    spatial = shape[2:]
    kernel = attrs.get("kernel_shape")
    if kernel is None and node.op_type == "Conv" and len(node.input) > 1:
        weight = dims.get(node.input[1])
        kernel = weight[2:] if weight and None not in weight[2:] else None
    if kernel is None or len(kernel) != len(spatial):
        return None
    strides = attrs.get("strides") or [1] * len(spatial)
    dilations = attrs.get("dilations") or [1] * len(spatial)
    if mode == "VALID":
        return [0] * (2 * len(spatial))
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end
