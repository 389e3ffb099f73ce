"""ONNX Gelu (opset 20, what torch 2.13 exports for ConvNeXt-style blocks; approximate="tanh"
for GPT-2's) after a convolution or a dense layer: the cpu backend fuses the GELU into oneDNN's
convolution or linear, which take the algorithm "none" (erf) or "tanh" and refuse anything else
at the first run; under SMALL_FLOPS (aten convolution, torch.addmm) it runs in place after.
Outputs match ONNX Runtime."""

from __future__ import annotations

import anychip
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

SIZES = {"small": (4, 8, 8), "large": (32, 64, 16)}   # (cin, cout, hw): 37 kFLOP, 9.4 MFLOP


def _conv_gelu(residual: bool, approximate: str = "none", size: str = "large"):
    cin, cout, hw = SIZES[size]
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9))
                                .astype(np.float32), "w")
    b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])]
    src = "c"
    if residual:
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"]))
        src = "s"
    nodes.append(helper.make_node("Gelu", [src], ["y"], approximate=approximate))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])]
    out = [1, cout, hw, hw]
    if residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, out))
    graph = helper.make_graph(nodes, "conv_gelu", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _dense_gelu(approximate: str, rows: int) -> onnx.ModelProto:
    """y = gelu(x @ W + b), [rows, 128] x [128, 128]: 4.2 MFLOP at 128 rows, 0.26 at 8."""
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array((rng.standard_normal((128, 128)) / 11).astype(np.float32), "W")
    b = numpy_helper.from_array((rng.standard_normal(128) * 0.1).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Gelu", ["a"], ["y"], approximate=approximate)]
    graph = helper.make_graph(
        nodes, "dense_gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 128])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("size", ["large", "small"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("residual", [False, True], ids=["conv-gelu", "conv-add-gelu"])
def test_conv_with_a_gelu_epilogue_runs_and_matches_onnxruntime(residual, approximate, size):
    model = _conv_gelu(residual, approximate, size)
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()
    act = "gelu" if approximate == "none" else "gelu_tanh"
    calls = anychip.compile(model, target="cpu", dispatch=True).report["dispatch"]["calls"]
    assert calls == {f"anychip.conv2d_bias{'_residual' if residual else ''}_{act}": 1}


@pytest.mark.parametrize("rows", [128, 8])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.usefixtures("library_gemms")
def test_dense_layer_with_a_gelu_epilogue_matches_onnxruntime(approximate, rows):
    model = _dense_gelu(approximate, rows)
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()
    act = "gelu" if approximate == "none" else "gelu_tanh"
    calls = anychip.compile(model, target="cpu", dispatch=True).report["dispatch"]["calls"]
    assert calls == {f"anychip.matmul_bias_{act}": 1}


def test_a_gelu_tanh_call_says_spec_v3():
    """An anychip that predates gelu_tanh refuses the call (it would skip the activation)."""
    from anychip.backends.cpu import torch_library

    plan = torch_library._matmul_plan("v3;e=bias,gelu_tanh;w=")
    assert plan.activation == "gelu_tanh" and plan.has_bias
    with pytest.raises(ValueError, match="recompile"):
        torch_library.parse_spec("v4;e=")
