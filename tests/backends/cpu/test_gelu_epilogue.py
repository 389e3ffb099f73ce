"""Conv followed by ONNX Gelu (opset 20, what torch 2.13 exports for ConvNeXt-style blocks):
the cpu backend fuses the GELU into oneDNN's convolution, which takes the algorithm "none"
(erf) or "tanh" and refuses anything else at the first run."""

from __future__ import annotations

import anychip
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _conv_gelu(residual: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) / 6).astype(np.float32), "w")
    b = numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])]
    src = "c"
    if residual:
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"]))
        src = "s"
    nodes.append(helper.make_node("Gelu", [src], ["y"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])]
    if residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 8, 8, 8]))
    graph = helper.make_graph(nodes, "conv_gelu", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("residual", [False, True], ids=["conv-gelu", "conv-add-gelu"])
def test_conv_with_a_gelu_epilogue_runs_and_matches_onnxruntime(residual):
    report = anychip.verify(_conv_gelu(residual), target="cpu")
    assert report.passed, report.summary()
