"""ATC's graph fusions that change numerics: per-channel affine chains folded in float32.

ATC fuses Conv + BatchNorm (and Caffe's Scale, exported as Mul/Add by a per-channel
constant) into the convolution's weights and bias before it converts anything to float16,
and merges a BatchNorm + Scale pair that follows no convolution into one scale-and-shift. The
simulator must do the same, or a force_fp16 network rounds every BatchNorm step in float16 and
shows several times the chip's error (resnet50: max abs 0.0153 unfused, 0.0079 fused, against
ONNX Runtime's fp32).

`fuse_channel_affine` works on the ONNX graph (the precision pass comes after it): a run of
single-consumer nodes that scale and shift along axis 1 by constants (inference
BatchNormalization, Mul, Div, Add, Sub) is folded, in float64, into the Conv / ConvTranspose
before it, or, after any other producer, rewritten as one Mul and one Add. Every absorbed node
is reported with the node it went into.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from anychip.compiler.onnx_inference import adopt_inferred, inferred_view, infer_shapes

_AFFINE = ("BatchNormalization", "Mul", "Div", "Add", "Sub")
_FLOAT = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


@dataclass(frozen=True)
class Fused:
    """One ONNX node that no longer runs on its own: it went into `into`."""

    name: str
    op_type: str
    into: str

    @property
    def reason(self) -> str:
        return (f"folded into '{self.into}' in float32 at compile time (ATC's Conv+BatchNorm / "
                f"Scale fusion)")


class _Graph:
    """Constants, ranks and consumers of the main graph, for the fusion's checks: constants
    and consumers from `model`, types and shapes from `shaped` (its inference)."""

    def __init__(self, model: onnx.ModelProto, shaped: onnx.ModelProto | None = None):
        graph = model.graph
        shaped = shaped if shaped is not None else model
        self.inits = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
            for attr in node.attribute:   # subgraphs may read any outer tensor
                for g in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                    for inner in g.node:
                        for name in inner.input:
                            self.consumers[name] = self.consumers.get(name, 0) + 2
        self.outputs = {o.name for o in graph.output}
        self.rank: dict[str, int] = {}
        self.channels: dict[str, int] = {}   # axis 1's size, where static
        self.elem: dict[str, int] = {}
        for vi in list(graph.input) + list(shaped.graph.value_info) + list(shaped.graph.output):
            t = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and t.HasField("shape"):
                self.rank[vi.name] = len(t.shape.dim)
                if len(t.shape.dim) > 1 and t.shape.dim[1].HasField("dim_value"):
                    self.channels[vi.name] = t.shape.dim[1].dim_value
            if vi.type.HasField("tensor_type"):
                self.elem[vi.name] = t.elem_type

    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant input: an initializer, a Constant node, or an
        Unsqueeze / Reshape / Identity of one (exporters wrap per-channel vectors so)."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            return numpy_helper.to_array(attr.t) if attr is not None else None
        if node.op_type == "Identity":
            return self.const(node.input[0])
        if node.op_type in ("Unsqueeze", "Reshape"):
            data = self.const(node.input[0])
            if data is None:
                return None
            if node.op_type == "Reshape":
                shape = self.const(node.input[1]) if len(node.input) > 1 else None
                if shape is None or any(int(d) <= 0 for d in shape):
                    return None
                return data.reshape([int(d) for d in shape])
            axes = self.const(node.input[1]) if len(node.input) > 1 else next(
                (np.array(a.ints) for a in node.attribute if a.name == "axes"), None)
            if axes is None:
                return None
            out_rank = data.ndim + len(axes)
            return np.expand_dims(data, tuple(int(a) % out_rank for a in axes))
        return None

    def single_consumer(self, name: str) -> bool:
        return self.consumers.get(name, 0) == 1 and name not in self.outputs


def _per_channel(value: np.ndarray | None, rank: int) -> np.ndarray | None:
    """`value` as a float64 vector along axis 1 of a rank-`rank` tensor, or None when it
    broadcasts along any other axis (or would change the result's shape)."""
    if value is None or value.dtype.kind != "f" or value.ndim > rank or rank < 2:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return value.reshape(-1).astype(np.float64)


def _affine_step(node, g: _Graph, x: str, rank: int):
    """(scale, shift) with node(x) == scale * x + shift per channel, or None."""
    if node.op_type == "BatchNormalization":
        if len(node.output) > 1 and any(node.output[1:]):
            return None                       # training-mode outputs
        if any(a.name == "training_mode" and a.i for a in node.attribute):
            return None
        params = [g.const(n) for n in node.input[1:5]]
        if node.input[0] != x or any(p is None or p.ndim != 1 for p in params):
            return None
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + eps)
        return scale, beta - mean * scale
    if len(node.input) != 2:
        return None
    a, b = node.input
    other = b if a == x else a if b == x else None
    if other is None or a == b:
        return None
    c = _per_channel(g.const(other), rank)
    if c is None:
        return None
    if node.op_type == "Mul":
        return c, np.zeros_like(c)
    if node.op_type == "Add":
        return np.ones_like(c), c
    if node.op_type == "Div" and a == x and np.all(c != 0):
        return 1.0 / c, np.zeros_like(c)
    if node.op_type == "Sub":
        return (np.ones_like(c), -c) if a == x else (-np.ones_like(c), c)
    return None


def _chain(start_out: str, g: _Graph, consumer_of: dict, rank: int, channels: int | None):
    """The longest run of affine nodes after `start_out`: (nodes, scale, shift, last output)."""
    nodes, scale, shift, out = [], None, None, start_out
    while g.single_consumer(out):
        node = consumer_of.get(out)
        if node is None or node.op_type not in _AFFINE or g.elem.get(node.output[0]) not in _FLOAT:
            break
        step = _affine_step(node, g, out, rank)
        if step is None:
            break
        s, b = step
        if channels is None:
            channels = max(len(s), len(b))
        if len(s) not in (1, channels) or len(b) not in (1, channels):
            break
        s, b = np.broadcast_to(s, (channels,)), np.broadcast_to(b, (channels,))
        scale = s if scale is None else scale * s
        shift = b if shift is None else shift * s + b
        nodes.append(node)
        out = node.output[0]
    return nodes, scale, shift, out


def fuse_channel_affine(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Fused]]:
    """The model with per-channel affine chains folded (see the module docstring), and the
    absorbed nodes. The input model is not modified (and not copied when nothing fuses);
    shape inference runs without the large weights (compiler/onnx_inference.py)."""
    try:
        shaped = inferred_view(model)
    except Exception:   # noqa: BLE001 - no ranks, no fusion; the caller's checks report it
        return model, []
    g = _Graph(model, shaped)
    consumer_of = {name: n for n in model.graph.node for name in n.input if name}
    drop: set[int] = set()
    fused: list[Fused] = []
    new_inits, new_nodes = [], {}
    for index, node in enumerate(model.graph.node):
        if id(node) in drop or not node.output or not node.output[0]:
            continue
        name = node.name or node.output[0]
        weight = g.const(node.input[1]) if node.op_type in ("Conv", "ConvTranspose") and \
            len(node.input) > 1 else None
        if weight is not None and weight.dtype.kind == "f" and g.single_consumer(node.input[1]):
            rank = g.rank.get(node.output[0])
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            channels = weight.shape[0] if node.op_type == "Conv" else weight.shape[1] * group
            if rank is None:
                continue
            chain, scale, shift, last = _chain(node.output[0], g, consumer_of, rank, channels)
            bias = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if not chain or (len(node.input) > 2 and node.input[2] and
                             (bias is None or not g.single_consumer(node.input[2]))):
                continue
            w = weight.astype(np.float64)
            if node.op_type == "Conv":
                w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            else:   # ConvTranspose weight: [C_in, C_out / group, k...]
                per_group = weight.shape[1]
                w = w.reshape((group, -1, per_group) + w.shape[2:])
                w = w * scale.reshape(group, 1, per_group, *(1,) * (weight.ndim - 2))
                w = w.reshape(weight.shape)
            b = (np.zeros(channels) if bias is None else bias.astype(np.float64)) * scale + shift
            wname, bname = f"{name}__fused_w", f"{name}__fused_b"
            new_inits += [numpy_helper.from_array(w.astype(weight.dtype), wname),
                          numpy_helper.from_array(b.astype(weight.dtype), bname)]
            new = copy.deepcopy(node)
            del new.input[1:]
            new.input.extend([wname, bname])
            new.output[0] = last
            new_nodes[index] = [new]
        elif node.op_type in _AFFINE:
            # the start of a chain that follows no convolution: x is its non-constant input
            x = next((i for i in node.input[:2] if i and g.const(i) is None), None)
            rank, channels = g.rank.get(x), g.channels.get(x)
            if x is None or rank is None or channels is None or \
                    g.elem.get(node.output[0]) not in _FLOAT:
                continue
            dtype = helper.tensor_dtype_to_np_dtype(g.elem[node.output[0]])
            step = _affine_step(node, g, x, rank)
            if step is None or len(step[0]) not in (1, channels) or \
                    len(step[1]) not in (1, channels):
                continue
            s0, b0 = (np.broadcast_to(v, (channels,)) for v in step)
            chain, scale, shift, last = _chain(node.output[0], g, consumer_of, rank, channels)
            if not chain:
                continue
            scale, shift = scale * s0, shift + b0 * scale
            shape = (1, len(scale)) + (1,) * (rank - 2)
            sname, tname, mid = f"{name}__scale", f"{name}__shift", f"{name}__scaled"
            new_inits += [numpy_helper.from_array(scale.reshape(shape).astype(dtype), sname),
                          numpy_helper.from_array(shift.reshape(shape).astype(dtype), tname)]
            new_nodes[index] = [helper.make_node("Mul", [x, sname], [mid], name=name),
                                helper.make_node("Add", [mid, tname], [last], name=f"{name}__add")]
        else:
            continue
        into = new_nodes[index][0].name or last
        for absorbed in chain:
            drop.add(id(absorbed))
            fused.append(Fused(absorbed.name or absorbed.output[0], absorbed.op_type, into))
    if not fused:
        return model, []
    out = adopt_inferred(copy.deepcopy(model), shaped)   # what onnx's inferred copy was
    graph = out.graph
    nodes = []
    for index, node in enumerate(model.graph.node):
        if index in new_nodes:
            nodes.extend(new_nodes[index])
        elif id(node) not in drop:
            nodes.append(graph.node[index])
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    live = {n for node in nodes for n in node.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in live or i.name in
            {x.name for x in graph.input}]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    return infer_shapes(out), fused
