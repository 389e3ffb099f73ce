"""backends/host/split_concat.py: a 1x1 convolution of a channel concatenation that feeds
nothing else is computed per input (SqueezeNet's fire modules) and matches ONNX Runtime on
the original model; joins with another consumer, or convolutions with more output channels
than the join has, keep the concatenation."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip


def _fire(out_channels: int, second_consumer: bool, inputs: int = 2, pool: bool = False):
    """x -> 1x1 squeeze -> `inputs` expands (1x1, 3x3, ...) -> Concat [-> 3x3 stride-2 max
    pool] -> 1x1 conv -> relu."""
    rng = np.random.default_rng(out_channels + inputs)
    f = TensorProto.FLOAT

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / 4).astype(np.float32), name)

    inits = [w("ws", 8, 16, 1, 1), w("bs", 8)]
    nodes = [helper.make_node("Conv", ["x", "ws", "bs"], ["s0"]),
             helper.make_node("Relu", ["s0"], ["s"])]
    branches = []
    for i in range(inputs):
        k = 1 + 2 * (i % 2)
        inits += [w(f"we{i}", 12, 8, k, k), w(f"be{i}", 12)]
        nodes += [helper.make_node("Conv", ["s", f"we{i}", f"be{i}"], [f"e{i}0"],
                                   pads=[k // 2] * 4),
                  helper.make_node("Relu", [f"e{i}0"], [f"e{i}"])]
        branches.append(f"e{i}")
    inits += [w("wo", out_channels, 12 * inputs, 1, 1), w("bo", out_channels)]
    nodes += [helper.make_node("Concat", branches, ["cat"], axis=1)]
    if pool:
        nodes += [helper.make_node("MaxPool", ["cat"], ["pooled"], kernel_shape=[3, 3],
                                   strides=[2, 2])]
    nodes += [helper.make_node("Conv", ["pooled" if pool else "cat", "wo", "bo"], ["o0"]),
              helper.make_node("Relu", ["o0"], ["y"])]
    side = 3 if pool else 7
    outputs = [helper.make_tensor_value_info("y", f, [1, out_channels, side, side])]
    if second_consumer:
        outputs.append(helper.make_tensor_value_info("cat", f, [1, 12 * inputs, 7, 7]))
    graph = helper.make_graph(nodes, "fire", [helper.make_tensor_value_info("x", f, [1, 16, 7, 7])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("out_channels, second_consumer, inputs, pool, split", [
    (16, False, 2, False, 1),    # a fire module's squeeze: split
    (24, False, 3, False, 1),    # three inputs
    (16, False, 2, True, 1),     # a max pool between: each input pooled
    (32, False, 2, False, 0),    # more output channels than the join's 24: kept
    (16, True, 2, False, 0),     # the join is also a graph output: kept
])
def test_convolutions_of_a_join_are_split_per_input(out_channels, second_consumer, inputs,
                                                    pool, split, monkeypatch):
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    model = _fire(out_channels, second_consumer, inputs, pool)
    art = anychip.compile(model, target="cpu", dispatch=False)
    assert art.report["concats_split"] == split
    report = anychip.verify(model, target="cpu", dispatch=False)
    assert report.passed, report.summary()
