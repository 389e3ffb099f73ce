"""Long chains compile in time linear in their length (issue 19, item 1): the NHWC layout
conversion, whose cost grew faster than the graph (10k nodes: 106 s), is skipped where there is
no convolution to convert, and still runs where there is one."""

from __future__ import annotations

import numpy as np
import onnx
from anychip.backends.cpu.backend import _has_conv2d, _to_nhwc
from anychip.compiler.driver import neutral_relax
from anychip.compiler.frontend import load_model
from onnx import TensorProto, helper, numpy_helper


def _chain(n: int, conv: bool) -> onnx.ModelProto:
    b = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32), "b")
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    nodes, prev = [], "x"
    if conv:
        nodes.append(helper.make_node("Conv", ["x", "w"], ["c"]))
        prev = "c"
    for i in range(n):
        nodes.append(helper.make_node("Add", [prev, "b"], [f"t{i}"]))
        prev = f"t{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 1, 2, 2])], [b, w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_layout_conversion_runs_only_with_a_convolution():
    plain = neutral_relax(load_model(_chain(50, conv=False)))
    with_conv = neutral_relax(load_model(_chain(50, conv=True)))
    assert not _has_conv2d(plain) and _has_conv2d(with_conv)
    same, layout = _to_nhwc(plain)
    assert same is plain and layout == "NHWC"
    converted, layout = _to_nhwc(with_conv)
    assert layout == "NHWC" and converted is not with_conv
    assert 'data_layout="NHWC"' in converted.script()
