"""Rescale random weights so a network's activations and logits sit at the scale it expects.

Random weights of the right distribution are not enough for a deep network: a batch norm
divides by its stored variance and subtracts its stored mean, not those its input actually
has, so with random weights each residual block of ResNet-50 roughly doubles the activation
scale (1e5 at the end, a one-hot softmax), channels whose mean sits far below zero die at the
next ReLU, and the real statistics that the light models keep (measured on the real weights;
shufflenet has variances of 1e-13 on dead channels) are off by up to 300x. Two fixes, both
measured on one seeded standard-normal input with ONNX Runtime, in graph order:

* every random Conv feeding a BatchNormalization has each output channel scaled so that its
  variance equals the BN's stored variance (real or random), and a random BN mean becomes the
  channel's measured mean plus its own small random offset (in units of the channel's standard
  deviation): the BN then normalises, as in a trained network. Real means are kept;
* the classifier (the last random Conv/Gemm before the output, looking through Softmax,
  Reshape, Flatten, Dropout, Relu and pooling, all positively homogeneous) is scaled, bias
  included, so the softmax's largest probability is TOP_PROB: neither one-hot nor uniform, so a
  wrong kernel moves it visibly.

Factors are rounded to 3 significant digits so the bytes do not hang on the last bits of a
sum; ONNX Runtime runs on one thread for the same reason (the same bytes on a given machine).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from anychip.compiler.importer_fixes.onnx_level import graph_links

TOP_PROB = 0.1
INPUT_SEED = 20261122
_HOMOGENEOUS = {"Softmax", "Reshape", "Flatten", "Dropout", "Identity", "Relu",
                "GlobalAveragePool", "AveragePool", "MaxPool"}


@dataclass
class _Target:
    layer: onnx.NodeProto          # the Conv or Gemm whose weight is rescaled
    weight: str                    # the random initializer behind its weight input
    probe: str                     # the value measured
    want: np.ndarray | None = None  # per-channel variance wanted; None: the logits rule
    mean: str | None = None        # a random BN mean to set to the measured channel mean
    bias: str | None = None        # a random bias scaled along with the weight (logits rule)


def _attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name),
                default)


def _random_weight(node, producer, random: set[str]) -> str | None:
    """The random initializer behind input 1, looking through one Reshape or Unsqueeze."""
    name = node.input[1]
    if name not in random and name in producer \
            and producer[name].op_type in ("Reshape", "Unsqueeze"):
        name = producer[name].input[0]
    return name if name in random else None


def _plan(model: onnx.ModelProto, random: set[str]) -> list[_Target]:
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer, consumers = graph_links(graph)
    targets = []
    for node in graph.node:
        uses = consumers.get(node.output[0], [])
        if node.op_type != "Conv" or node.input[1] not in random or len(uses) != 1:
            continue
        bn = uses[0]
        if bn.op_type == "BatchNormalization" and bn.input[0] == node.output[0] \
                and bn.input[4] in inits:
            var = numpy_helper.to_array(inits[bn.input[4]]).astype(np.float64)
            targets.append(_Target(node, node.input[1], node.output[0],
                                   want=var + _attr(bn, "epsilon", 1e-5),
                                   mean=bn.input[3] if bn.input[3] in random else None))
    value, logits = graph.output[0].name, None
    while value in producer:
        node = producer[value]
        weight = _random_weight(node, producer, random) if node.op_type in ("Conv", "Gemm") \
            else None
        if node.op_type == "Softmax":
            logits = node.input[0]
        elif weight is not None:
            bias = node.input[2] if len(node.input) > 2 and node.input[2] in random else None
            targets = [t for t in targets if t.layer is not node]
            targets.append(_Target(node, weight, logits or value, bias=bias))
            break
        elif node.op_type not in _HOMOGENEOUS:
            break
        value = node.input[0]
    return targets


def _prefix(model: onnx.ModelProto, values: list[str]) -> bytes:
    """The part of the graph that computes `values`, with them as its outputs, serialized."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    needed, stack, nodes = set(), list(values), set()
    while stack:
        v = stack.pop()
        if v in needed:
            continue
        needed.add(v)
        if v in producer:
            nodes.add(id(producer[v]))
            stack.extend(i for i in producer[v].input if i)
    outs = [onnx.helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, None) for v in values]
    sub = onnx.helper.make_graph([n for n in graph.node if id(n) in nodes], "probe",
                                 list(graph.input), outs,
                                 [t for t in graph.initializer if t.name in needed])
    probe = onnx.helper.make_model(sub, opset_imports=model.opset_import,
                                   ir_version=model.ir_version)
    return probe.SerializeToString()


def _levels(model: onnx.ModelProto, targets: list[_Target]) -> list[list[_Target]]:
    """Group targets so that no target depends on another of its own group."""
    by_output = {t.layer.output[0] for t in targets}
    level: dict[str, int] = {}     # value -> number of targets upstream, itself included
    for node in model.graph.node:
        depth = max((level.get(i, 0) for i in node.input), default=0)
        depth += node.output[0] in by_output
        for o in node.output:
            level[o] = depth
    groups: dict[int, list[_Target]] = {}
    for t in targets:
        groups.setdefault(level[t.layer.output[0]], []).append(t)
    return [groups[k] for k in sorted(groups)]


def _round3(x) -> np.ndarray:
    return np.array([float(f"{v:.3g}") for v in np.atleast_1d(x)], dtype=np.float32)


def _top_prob_factor(z: np.ndarray) -> float:
    """s such that max(softmax(s * z)) == TOP_PROB (it grows with s), by bisection in log s."""
    z = z.reshape(-1) - z.max()
    if z.min() == 0.0 or TOP_PROB <= 1.0 / z.size:
        return 1.0
    lo, hi = -12.0, 12.0
    for _ in range(80):
        mid = (lo + hi) / 2
        top = 1.0 / np.exp(np.exp(mid) * z).sum()
        lo, hi = (lo, mid) if top > TOP_PROB else (mid, hi)
    return float(np.exp((lo + hi) / 2))


def _channel_stats(y: np.ndarray, want: np.ndarray):
    axes = tuple(a for a in range(y.ndim) if a != 1)
    mean, var = y.mean(axis=axes), y.var(axis=axes)
    # A constant channel (all its inputs cut by a ReLU) has nothing to rescale.
    alive = var > 1e-12 * max(var.max(), 1e-30)
    return mean, _round3(np.where(alive, np.sqrt(want / np.where(alive, var, 1)), 1))


def _scale(inits: dict, name: str, factor: np.ndarray) -> np.ndarray:
    """Multiply initializer `name` by factor (per leading row when factor is a vector)."""
    w = numpy_helper.to_array(inits[name])
    f = factor.reshape(-1, *([1] * (w.ndim - 1))) if factor.size > 1 else factor.reshape(())
    w = (w * f).astype(np.float32)
    inits[name].CopyFrom(numpy_helper.from_array(w, name))
    return w


def calibrate(model: onnx.ModelProto, random: set[str]) -> int:
    """Rescale, in place, the random initializers named in `random`; return the layers moved."""
    import onnxruntime as ort

    targets = _plan(model, random)
    if not targets:
        return 0
    real_input = model.graph.input[0]
    dims = [d.dim_value for d in real_input.type.tensor_type.shape.dim]
    x = np.random.default_rng(INPUT_SEED).standard_normal(dims, dtype=np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    inits = {t.name: t for t in model.graph.initializer}
    for group in _levels(model, targets):
        session = ort.InferenceSession(_prefix(model, [t.probe for t in group]), options,
                                       providers=["CPUExecutionProvider"])
        for t, y in zip(group, session.run(None, {real_input.name: x})):
            y = y.astype(np.float64)
            if t.want is None:
                factor = _round3(_top_prob_factor(y))
                _scale(inits, t.weight, factor)
                if t.bias:
                    _scale(inits, t.bias, factor)
                continue
            mean, factor = _channel_stats(y, t.want)
            _scale(inits, t.weight, factor)
            if t.mean:
                bias = t.layer.input[2] if len(t.layer.input) > 2 else None
                b = numpy_helper.to_array(inits[bias]).astype(np.float64) if bias else 0.0
                offset = numpy_helper.to_array(inits[t.mean]).astype(np.float64)
                new = factor * (mean - b) + b + offset * np.sqrt(t.want)
                inits[t.mean].CopyFrom(numpy_helper.from_array(new.astype(np.float32), t.mean))
    return len(targets)
