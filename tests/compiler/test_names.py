"""Graph I/O names become C identifiers, uniquely, everywhere they are used."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from anychip.compiler.names import c_identifier, sanitize_io_names


def test_c_identifier_rules():
    taken: set[str] = set()
    assert c_identifier("gpu_0/data_0", taken) == "gpu_0_data_0"
    assert c_identifier("gpu_0:data_0", taken) == "gpu_0_data_0_1"  # collision resolved
    assert c_identifier("0input", taken) == "t_0input"
    assert c_identifier("for", taken) == "for_"
    assert c_identifier("", taken) == "t"


def test_sanitize_renames_inputs_outputs_and_uses():
    node = helper.make_node("Relu", ["a/in"], ["b:out"], name="r")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("a/in", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("b:out", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph)
    mapping = sanitize_io_names(model)
    assert mapping == {"a/in": "a_in", "b:out": "b_out"}
    assert list(model.graph.node[0].input) == ["a_in"]
    assert list(model.graph.node[0].output) == ["b_out"]
    onnx.checker.check_model(model)
