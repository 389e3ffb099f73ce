"""`verify --special-values` (issue 19, item 3): inputs hold NaN, +-Inf, +-0 and subnormals;
differences from ONNX Runtime are reported with their positions."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from anychip.compiler.cli.main import main
from anychip.compiler.special_values import SPECIALS, differences, special_inputs


def test_special_inputs_hold_every_special_value():
    feed = special_inputs({"x": np.ones((4, 8), np.float32), "i": np.arange(3)}, seed=0)
    x = feed["x"].reshape(-1)
    assert np.isnan(x[0]) and x[1] == np.inf and x[2] == -np.inf
    assert x[3] == 0 and not np.signbit(x[3]) and x[4] == 0 and np.signbit(x[4])
    assert 0 < x[5] < np.finfo(np.float32).tiny                     # a subnormal
    assert len(SPECIALS) == 7 and feed["i"].tolist() == [0, 1, 2]   # integers untouched


def test_differences_name_the_positions():
    want = np.array([np.nan, np.inf, 1.0, -np.inf], np.float32)
    got = np.array([0.0, np.inf, 1.0, np.inf], np.float32)
    diff = differences("y", got, want, "fp32")
    assert diff.differ == 2
    assert diff.first == ["[0]: got 0, reference nan", "[3]: got inf, reference -inf"]
    assert differences("y", want.copy(), want, "fp32").differ == 0


def test_cli_special_values_pass_on_cpu(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sign", ["x"], ["s"]),
             helper.make_node("ReduceMax", ["x"], ["m"], keepdims=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [4, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
                               for n, shape in (("r", [4, 8]), ("s", [4, 8]), ("m", [1, 1]))])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert main(["verify", str(path), "--special-values"]) == 0, capsys.readouterr()
    assert "PASS" in capsys.readouterr().out
