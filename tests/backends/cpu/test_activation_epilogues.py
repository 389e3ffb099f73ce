"""Conv followed by the activations of depthwise / squeeze-excite networks: SiLU as ONNX writes
it (Sigmoid, then Mul of the conv output and the gate, either order), Sigmoid, HardSwish (TVM
imports it as z * clip(z + 3, 0, 6) / 6) and HardSigmoid (folded into the conv, then a clip to
[0, 1]). The cpu backend runs each as oneDNN's post-op of the convolution (after a residual add,
in place after it); the outputs match ONNX Runtime and the report names the fused call."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip


def _conv_act(act: str, group: int = 1, residual: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    c = 8
    cin = c if group > 1 else 4
    w = (rng.standard_normal((c, cin // group, 3, 3)) / 2).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array((rng.standard_normal(c) * 0.5).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], pads=[1, 1, 1, 1], group=group)]
    z = "z"
    if residual:
        nodes.append(helper.make_node("Add", ["z", "r"], ["s"]))
        z = "s"
    if act in ("silu", "silu_swapped"):
        mul = [z, "g"] if act == "silu" else ["g", z]
        nodes += [helper.make_node("Sigmoid", [z], ["g"]), helper.make_node("Mul", mul, ["y"])]
    elif act == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [z], ["y"]))
    elif act == "hardswish":
        nodes.append(helper.make_node("HardSwish", [z], ["y"]))
    elif act == "hardsigmoid":
        nodes.append(helper.make_node("HardSigmoid", [z], ["y"], alpha=1 / 6, beta=0.5))
    elif act == "not_hardswish":   # z * clip(z + 2, 0, 6) / 6: looks alike, is not HardSwish
        inits += [numpy_helper.from_array(np.array(v, np.float32), n)
                  for n, v in (("two", 2), ("lo", 0), ("hi", 6), ("six", 6))]
        nodes += [helper.make_node("Add", [z, "two"], ["p"]),
                  helper.make_node("Clip", ["p", "lo", "hi"], ["q"]),
                  helper.make_node("Div", ["q", "six"], ["h"]),
                  helper.make_node("Mul", [z, "h"], ["y"])]
    shape = [1, c, 8, 8]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 8, 8])]
    if residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, act, inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("act, group, residual, fused", [
    ("silu", 1, False, "conv2d_bias_silu"),
    ("silu_swapped", 1, False, "conv2d_bias_silu"),
    ("sigmoid", 1, False, "conv2d_bias_sigmoid"),
    ("hardswish", 1, False, "conv2d_bias_hardswish"),
    ("hardsigmoid", 1, False, "conv2d_bias_clip"),
    ("silu", 8, False, "conv2d_bias_silu"),                    # depthwise (group = C)
    # applied after the add (a small depthwise one with HardSwish stays in TVM instead:
    # tests/backends/host/test_depthwise.py)
    ("hardswish", 1, True, "conv2d_bias_residual_hardswish"),
    ("sigmoid", 8, True, "conv2d_bias_residual_sigmoid"),
])
def test_activation_runs_as_the_convolutions_epilogue(act, group, residual, fused):
    """(A small depthwise convolution is kept on the library here by fast_math off: with it
    on, TVM computes it, tests/backends/host/test_depthwise.py.)"""
    model = _conv_act(act, group, residual)
    options = {"fast_math": False} if group > 1 else {}
    report = anychip.verify(model, target="cpu", dispatch=True, **options)
    assert report.passed, report.summary()
    assert report.max_abs < 1e-5
    calls = anychip.compile(model, target="cpu", dispatch=True, **options).report["dispatch"]["calls"]
    assert calls == {"anychip." + fused: 1}


def test_a_lookalike_of_hardswish_is_not_fused_as_one():
    model = _conv_act("not_hardswish")
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()
    calls = anychip.compile(model, target="cpu", dispatch=True).report["dispatch"]["calls"]
    assert calls == {"anychip.conv2d_bias": 1}


@pytest.mark.usefixtures("library_gemms")
def test_squeeze_excite_convolutions_run_as_gemms(monkeypatch):
    """The 1x1 convolutions of the pooled 1x1 image (squeeze-excite) run as torch GEMMs with
    their epilogue (relu; the HardSigmoid folded into the conv, a clip), and match ORT."""
    from anychip.backends.cpu import torch_library

    rng = np.random.default_rng(11)
    c, sq = 16, 4
    inits = [numpy_helper.from_array((rng.standard_normal(s) / 2).astype(np.float32), n)
             for n, s in (("w1", (sq, c, 1, 1)), ("b1", (sq,)), ("w2", (c, sq, 1, 1)),
                          ("b2", (c,)))]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Conv", ["p", "w1", "b1"], ["f1"]),
             helper.make_node("Relu", ["f1"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["f2"]),
             helper.make_node("HardSigmoid", ["f2"], ["g"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["x", "g"], ["y"])]
    shape = [1, c, 6, 6]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    seen = []
    real = torch_library._conv_as_gemm
    monkeypatch.setattr(torch_library, "_conv_as_gemm",
                        lambda *a: seen.append(a[1].activation) or real(*a))
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()
    assert report.max_abs < 1e-5
    assert sorted(set(seen)) == ["clip", "relu"]


@pytest.mark.parametrize("act", ["silu", "hardswish"])
def test_torch_plugin_library_takes_the_activation_too(act):
    """The torch device plug-in library (CUDA's, here through the cpu stand-in) computes
    sigmoid / SiLU / HardSwish epilogues with out= ops; outputs match ORT."""
    plugin = "tests.backends.cpu.fake_vendor_torch:cpu"
    model = _conv_act(act, group=8)
    art = anychip.compile(model, target="cpu", torch_plugin=plugin)
    assert art.report["dispatch"]["calls"] == {f"anychip.conv2d_bias_{act}": 1}
    report = anychip.verify(model, target="cpu", torch_plugin=plugin)
    assert report.passed, report.summary()
