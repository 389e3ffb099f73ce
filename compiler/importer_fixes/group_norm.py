"""GroupNorm as exported (Reshape -> InstanceNormalization -> Reshape) in ops that keep NHWC.

torch exports `nn.GroupNorm(G, C)` as a Reshape of the [N, C, ...] activation to [N, G, -1],
an InstanceNormalization over the G "channels" (scale ones, bias zeros) and a Reshape back,
then the affine Mul/Add per channel. TVM imports the reshapes as they are, and the NHWC layout
conversion cannot carry a reshape: every GroupNorm between convolutions (diffusion U-Nets,
detection heads) got a transpose to NCHW and back. The three nodes are replaced here by ops
the conversion carries (`_decomposed`: means over the pixels, a 1x1 convolution averaging each
group's channels), which run on the host's column-reduction and GEMM schedules. (One
`relax.nn.group_norm` also keeps NHWC, but TOPI's kernel fell to the generic schedule: 3.3 ms
for a [1, 56, 56, 32] map, docs/performance.md.)

Same values: InstanceNormalization over [N, G, K] normalises each (image, group) over its
C/G channels and every pixel, with the population variance and epsilon, which is GroupNorm's
definition; its per-group scale and bias become per-channel ones (each repeated C/G times).
Only the exact pattern is taken: a static [N, C, H, W] input, a constant target shape [N, G, K]
(or with 0 / -1 standing for those), the instance norm's scale and bias constants, and a
Reshape back to the input's shape as its only consumer.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_level import default_opset, graph_links



def fuse_group_norms(model: onnx.ModelProto, shapes: dict, dtypes: dict) -> int:
    """Replace each Reshape -> InstanceNormalization -> Reshape GroupNorm in the main graph by
    `_decomposed`'s nodes (`shapes`, `dtypes`: static shapes and numpy dtype names by value
    name, onnx_level's). Returns how many."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers, consumers = graph_links(graph)
    outputs = {o.name for o in graph.output}
    fused = 0
    for norm in [n for n in graph.node if n.op_type == "InstanceNormalization"]:
        found = _match(norm, producers, consumers, inits, shapes, outputs,
                       dtypes.get(norm.input[0]))
        if found is None:
            continue
        first, last, x, groups, scale, bias, epsilon = found
        tag = f"{norm.name or norm.output[0]}/group_norm"
        nodes, tensors = _decomposed(tag, x, last.output[0], shapes[x], groups, scale, bias,
                                     epsilon, dtypes[norm.input[0]], default_opset(model))
        graph.initializer.extend(tensors)
        index = list(graph.node).index(first)
        for old in (first, norm, last):
            graph.node.remove(old)
        for offset, node in enumerate(nodes):
            graph.node.insert(index + offset, node)
        fused += 1
    return fused


def _match(norm, producers, consumers, inits, shapes, outputs, dtype):
    if len(norm.input) != 3 or len(norm.output) != 1 or \
            dtype not in ("float16", "float32", "float64"):
        return None   # a malformed node is the importer's to report
    first = producers.get(norm.input[0])
    if first is None or first.op_type != "Reshape" or len(first.input) < 2:
        return None
    x = first.input[0]
    dims = shapes.get(x)
    target = _constant(first.input[1], inits)
    if not dims or len(dims) != 4 or target is None or len(target) != 3:
        return None
    n, c = dims[0], dims[1]
    groups = int(target[1])
    if groups <= 0 or c % groups or int(target[0]) not in (0, n) or \
            int(target[2]) not in (-1, int(np.prod(dims[1:])) // groups):
        return None
    if len(consumers.get(first.output[0], [])) != 1 or norm.output[0] in outputs:
        return None
    after = consumers.get(norm.output[0], [])
    if len(after) != 1 or after[0].op_type != "Reshape" or len(after[0].input) < 2:
        return None
    last = after[0]
    back = _constant(last.input[1], inits)
    if back is None or [int(d) for d in back] != list(dims) and \
            shapes.get(last.output[0]) != list(dims):
        return None
    scale, bias = _constant(norm.input[1], inits), _constant(norm.input[2], inits)
    if scale is None or bias is None or scale.shape != (groups,) or bias.shape != (groups,):
        return None
    epsilon = 1e-5
    for attr in norm.attribute:
        if attr.name == "epsilon":
            epsilon = float(attr.f)
    per = c // groups
    return first, last, x, groups, np.repeat(scale, per), np.repeat(bias, per), epsilon


def _decomposed(tag, x, out, dims, groups, scale, bias, epsilon, dtype, opset: int):
    """GroupNorm of x [N, C, H, W] from ops the NHWC conversion carries: per-channel means
    over the pixels, averaged over each group's channels by a 1x1 convolution with a
    block-diagonal weight (1 / (C / G) within a group), the same for the squared deviations
    (the population variance, two passes as InstanceNormalization's definition), then the
    normalisation and the per-channel scale and bias."""
    c = dims[1]
    per = c // groups
    block = np.kron(np.eye(groups), np.full((per, per), 1.0 / per)).astype(dtype)
    consts = {"avg": block.reshape(c, c, 1, 1), "eps": np.array(epsilon, dtype),
              "scale": scale.astype(dtype).reshape(c, 1, 1),
              "bias": bias.astype(dtype).reshape(c, 1, 1)}
    if opset >= 18:   # ReduceMean's axes: an input from opset 18, an attribute before
        consts["axes"] = np.array([2, 3], np.int64)
    tensors = [numpy_helper.from_array(v, f"{tag}/{k}") for k, v in consts.items()]
    t = {k: f"{tag}/{k}" for k in consts}
    v = {k: f"{tag}/{k}" for k in ("mean", "group_mean", "dev", "sq", "sq_mean", "var",
                                   "var_eps", "std", "normed", "scaled")}
    def pixel_mean(src: str, dst: str):
        if opset >= 18:
            return helper.make_node("ReduceMean", [src, t["axes"]], [dst], keepdims=1)
        return helper.make_node("ReduceMean", [src], [dst], axes=[2, 3], keepdims=1)

    nodes = [
        pixel_mean(x, v["mean"]),
        helper.make_node("Conv", [v["mean"], t["avg"]], [v["group_mean"]]),
        helper.make_node("Sub", [x, v["group_mean"]], [v["dev"]]),
        helper.make_node("Mul", [v["dev"], v["dev"]], [v["sq"]]),
        pixel_mean(v["sq"], v["sq_mean"]),
        helper.make_node("Conv", [v["sq_mean"], t["avg"]], [v["var"]]),
        helper.make_node("Add", [v["var"], t["eps"]], [v["var_eps"]]),
        helper.make_node("Sqrt", [v["var_eps"]], [v["std"]]),
        helper.make_node("Div", [v["dev"], v["std"]], [v["normed"]]),
        helper.make_node("Mul", [v["normed"], t["scale"]], [v["scaled"]]),
        helper.make_node("Add", [v["scaled"], t["bias"]], [out])]
    return nodes, tensors


def _constant(name: str, inits: dict):
    init = inits.get(name)
    return None if init is None else numpy_helper.to_array(init)
