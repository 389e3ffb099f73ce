"""Stride-1, unpadded 1x1 convolutions of NHWC data larger than 1x1 (MBConv's expand and
project, resnet's bottleneck ends) run as oneDNN's linear on the [N*H*W, C] matrix, the
activation fused (spec field gemm=linear); strided or padded ones stay convolutions. Outputs
match ONNX Runtime within compiler/tolerances.py's fp32 tolerance (anychip.verify)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.backends.cpu import torch_library

# the library's GEMM paths, at sizes TVM's own kernel would otherwise take (conftest.py)
pytestmark = pytest.mark.usefixtures("library_gemms")


def _conv1x1(act: str | None, *, stride: int = 1, pad: int = 0, residual: bool = False,
             batch: int = 2, hw: int = 20, cin: int = 48, cout: int = 64) -> onnx.ModelProto:
    """Default size: 4.9 MFLOP, over torch_library.SMALL_FLOPS (a smaller one runs as an aten
    convolution, test below)."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(
                 (rng.standard_normal((cout, cin, 1, 1)) / 4).astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal(cout) / 2).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], strides=[stride, stride],
                              pads=[pad] * 4)]
    out_hw = (hw + 2 * pad - 1) // stride + 1
    shape = [batch, cout, out_hw, out_hw]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, hw, hw])]
    z = "z"
    if residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, shape))
        nodes.append(helper.make_node("Add", ["z", "r"], ["s"]))
        z = "s"
    if act == "silu":
        nodes += [helper.make_node("Sigmoid", [z], ["g"]), helper.make_node("Mul", [z, "g"], ["y"])]
    elif act == "hardsigmoid":   # folded into the conv, then a clip to [0, 1]
        nodes.append(helper.make_node("HardSigmoid", [z], ["y"], alpha=1 / 6, beta=0.5))
    elif act is not None:
        nodes.append(helper.make_node({"relu": "Relu", "sigmoid": "Sigmoid", "gelu": "Gelu",
                                       "hardswish": "HardSwish"}[act], [z], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [z], ["y"]))
    graph = helper.make_graph(nodes, "conv1x1", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])   # Gelu


def _compiled_specs(model, monkeypatch, **options) -> list[dict]:
    """The spec fields of every library call the compile emits (a fresh compile: the test's
    private cache is keyed by the model, and each model here differs)."""
    seen: list[dict] = []
    real = torch_library.spec_text
    monkeypatch.setattr(torch_library, "spec_text", lambda **f: seen.append(f) or real(**f))
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    anychip.compile(model, target="cpu", dispatch=True, **options)
    monkeypatch.setattr(torch_library, "spec_text", real)
    return [f for f in seen if "g" in f]   # the convolutions' specs


@pytest.mark.parametrize("act, residual, fused", [
    (None, False, "conv2d_bias"),
    ("relu", False, "conv2d_bias_relu"),
    ("silu", False, "conv2d_bias_silu"),
    ("sigmoid", False, "conv2d_bias_sigmoid"),
    ("hardswish", False, "conv2d_bias_hardswish"),
    ("hardsigmoid", False, "conv2d_bias_clip"),
    ("gelu", False, "conv2d_bias_gelu"),
    (None, True, "conv2d_bias_residual"),           # MBConv's project conv + skip
])
def test_pointwise_conv_runs_as_a_linear(act, residual, fused, monkeypatch):
    model = _conv1x1(act, residual=residual)
    specs = _compiled_specs(model, monkeypatch)
    assert [s.get("gemm") for s in specs] == ["linear"]
    ran = []
    real = torch_library.TorchCpuLibrary._conv_as_linear
    monkeypatch.setattr(torch_library.TorchCpuLibrary, "_conv_as_linear",
                        lambda self, *a: ran.append(a[1].activation) or real(self, *a))
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()
    assert report.max_abs < 1e-5
    assert ran, "the linear path did not run"
    calls = anychip.compile(model, target="cpu", dispatch=True).report["dispatch"]["calls"]
    assert calls == {"anychip." + fused: 1}


@pytest.mark.parametrize("case", ["strided", "padded", "residual_then_relu"])
def test_other_pointwise_convs_stay_convolutions(case, monkeypatch):
    """A strided or padded 1x1 convolution is no GEMM of the input matrix; a residual followed
    by an activation stays on oneDNN's convolution, which fuses both."""
    model = {"strided": lambda: _conv1x1("relu", stride=2),
             "padded": lambda: _conv1x1("relu", pad=1),
             "residual_then_relu": lambda: _conv1x1("relu", residual=True)}[case]()
    specs = _compiled_specs(model, monkeypatch)
    assert len(specs) == 1 and "gemm" not in specs[0]
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()
    assert report.max_abs < 1e-5


def test_older_specs_read_as_before():
    """An artifact compiled before gemm=linear: its 1x1-image GEMMs (gemm=1) and convolutions
    (no gemm field) plan as they did; an older anychip reads gemm=linear as no `1`, i.e. as a
    convolution, which computes the same product."""
    base = "v1;layout=NHWC;s=1,1;p=0,0;d=1,1;g=1;e=bias,relu;w=ab"
    assert torch_library._conv_plan(base + ";gemm=1").gemm == "1"
    assert torch_library._conv_plan(base).gemm == ""
    assert torch_library._conv_plan(base + ";gemm=linear").gemm == "linear"


def test_pointwise_conv_of_a_symbolic_batch_runs_as_a_linear_at_each_batch(monkeypatch):
    """The GEMM's rows are N*H*W of each run: batches 1, 3 and 2 of one artifact (a weight
    packed per row count) match ONNX Runtime."""
    import onnxruntime as ort

    from anychip.compiler.tolerances import compare, tolerance_for

    model = _conv1x1(None, residual=True, batch="N")
    specs = _compiled_specs(model, monkeypatch)
    assert [s.get("gemm") for s in specs] == ["linear"]
    art = anychip.compile(model, target="cpu", dispatch=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    tol = tolerance_for("fp32", np.float32)
    for n in (1, 3, 2):
        rng = np.random.default_rng(n)
        feed = {"x": rng.standard_normal((n, 48, 20, 20)).astype(np.float32),
                "r": rng.standard_normal((n, 64, 20, 20)).astype(np.float32)}
        got = list(art.run(feed).values())[0]
        result = compare(got, sess.run(None, feed)[0], tol)
        assert result.passed, (n, result)


def _verified_through(kernel: str, model, monkeypatch) -> list:
    """anychip.verify of `model` (passes, within 1e-5 of ONNX Runtime) with torch_library's
    `kernel` (torch, plan, ...) spied on: the activations of the calls it served."""
    ran = []
    real = getattr(torch_library, kernel)
    monkeypatch.setattr(torch_library, kernel,
                        lambda torch, plan, *a: ran.append(plan.activation) or
                        real(torch, plan, *a))
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()
    assert report.max_abs < 1e-5
    return ran


@pytest.mark.parametrize("act, residual", [("relu", False), ("silu", True), (None, False),
                                           ("hardswish", True)])
def test_small_pointwise_convolutions_run_as_addmm(act, residual, monkeypatch):
    """Under SMALL_FLOPS a stride-1 unpadded 1x1 convolution of NHWC data is torch.addmm on
    the [N*H*W, C] matrix (gemm=mm), residual and activation in place after; outputs match
    ONNX Runtime. An anychip that predates `mm` plans it as a convolution."""
    model = _conv1x1(act, residual=residual, hw=6, cin=16, cout=24)
    specs = _compiled_specs(model, monkeypatch)
    assert [(s.get("gemm"), s.get("impl")) for s in specs] == [("mm", None)]
    assert _verified_through("_conv_as_gemm", model, monkeypatch) == [act]


@pytest.mark.parametrize("act, residual", [("relu", False), ("silu", True), (None, False)])
def test_small_convolutions_run_as_aten_convolutions(act, residual, monkeypatch):
    """Under SMALL_FLOPS a dense convolution that is no GEMM (here padded) is torch's aten
    convolution (oneDNN's pointwise call costs more before any arithmetic than such a
    convolution takes), its epilogue in place after; a depthwise one stays on oneDNN. Outputs
    match ONNX Runtime."""
    model = _conv1x1(act, residual=residual, hw=6, cin=16, cout=24, pad=1)
    specs = _compiled_specs(model, monkeypatch)
    assert [(s.get("gemm"), s.get("impl")) for s in specs] == [(None, "aten")]
    assert _verified_through("_conv_aten", model, monkeypatch) == [act]
    assert torch_library._conv_plan("v1;layout=NHWC;s=1,1;p=0,0;d=1,1;g=1;e=;w=").impl == ""


def test_small_depthwise_convolutions_stay_on_onednn(monkeypatch):
    """Not aten's convolution (with fast_math off: with it on, such a small depthwise one
    stays in TVM, tests/backends/host/test_depthwise.py)."""
    from tests.backends.cpu.test_activation_epilogues import _conv_act

    specs = _compiled_specs(_conv_act("silu", group=8), monkeypatch, fast_math=False)
    assert [(s["g"], s.get("impl")) for s in specs] == [(8, None)]
