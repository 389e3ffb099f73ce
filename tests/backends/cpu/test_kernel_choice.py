"""The cpu backend's per-model choice (backends/cpu/kernel_choice.py): a network of small
convolutions and dense layers runs on TVM's kernels alone (no library call, the GEMM-shaped
ones through backends/host/gemm.py, weights HWIO) and matches ONNX Runtime, and so does a
transformer block (attention's products per head included); symbolic shapes and large
convolutions keep the library; `dispatch=` overrides the choice."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.backends.host import gemm

from .models import attention_block


def _mobile_net(batch: int | str = 1) -> onnx.ModelProto:
    """A stem 3x3 stride-2 conv, max pooling, a depthwise conv, a grouped and a plain 1x1 conv
    (one with a residual), global pooling and a dense head: a mobile network's shapes."""
    rng = np.random.default_rng(3)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / 3).astype(np.float32),
                                       name)

    inits = [w("w0", 16, 3, 3, 3), w("b0", 16), w("w1", 16, 1, 3, 3), w("w2", 32, 8, 1, 1),
             w("w3", 32, 32, 1, 1), w("b3", 32), w("wf", 32, 10), w("bf", 10)]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("MaxPool", ["r0"], ["q0"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["q0", "w1"], ["c1"], group=16, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], group=2),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
             helper.make_node("Add", ["c3", "r2"], ["s3"]),
             helper.make_node("GlobalAveragePool", ["s3"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "wf"], ["m"]),
             helper.make_node("Add", ["m", "bf"], ["y"])]
    graph = helper.make_graph(
        nodes, "mobile", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                        [batch, 3, 30, 30])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("case", ["mobile", "transformer"])
def test_small_network_runs_on_tvm_kernels_alone(case, monkeypatch):
    scheduled = []
    real = gemm.schedule_gemm
    monkeypatch.setattr(gemm, "schedule_gemm",
                        lambda f, t, p: (lambda s: scheduled.append(s is not None) or s)(
                            real(f, t, p)))
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    model = _mobile_net() if case == "mobile" else attention_block()
    art = anychip.compile(model, target="cpu")
    choice = art.report["kernels"]
    assert choice["kernels"] == "tvm" and choice["tvm_ms"] < choice["library_ms"], choice
    assert art.report["dispatch"] is None and art.manifest["runtime"]["libraries"] == []
    # mobile: stem, grouped and plain 1x1 convolutions, dense head; transformer: the
    # combined QKV, output and two feed-forward projections, attention's two products
    assert sum(scheduled) >= (4 if case == "mobile" else 6)
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()


def test_dispatch_true_keeps_the_library():
    art = anychip.compile(_mobile_net(), target="cpu", dispatch=True)
    assert "kernels" not in art.report and art.report["dispatch"]["total"] >= 1
    report = anychip.verify(_mobile_net(), target="cpu", dispatch=True)
    assert report.passed, report.summary()


def _big_conv() -> onnx.ModelProto:
    """One VGG-sized convolution (0.9 GFLOP): the library's rate beats a lower TVM rate by
    more than its call costs."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array((rng.standard_normal((128, 128, 3, 3)) / 34)
                                     .astype(np.float32), "w")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, 56, 56])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128, 56, 56])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("case", ["symbolic", "large_convolution"])
def test_the_library_stays_where_tvm_alone_would_lose(case, monkeypatch):
    from anychip.backends.cpu import kernel_choice

    # TVM's GEMMs now run large convolutions about as fast as the library; the estimate's
    # choice is tested with TVM's rate lowered to where the library's larger rate wins
    monkeypatch.setattr(kernel_choice, "TVM_GFLOPS_PER_CORE", 90.0)
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    model, options = {"symbolic": (_mobile_net("batch"), {"dims": {"batch": (1, 4)}}),
                      "large_convolution": (_big_conv(), {})}[case]
    art = anychip.compile(model, target="cpu", **options)
    choice = art.report["kernels"]
    assert choice["kernels"] == "library", choice
    assert {"symbolic": "symbolic",
            "large_convolution": "estimated faster"}[case] in choice["why"]
    assert art.report["dispatch"]["total"] >= 1


def test_tvm_pool_takes_the_run_threads_unless_the_user_set_them(monkeypatch):
    from anychip.compiler.dispatch import size_tvm_pool

    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    size_tvm_pool(2)
    import os

    assert os.environ["TVM_NUM_THREADS"] == "2"
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    size_tvm_pool(2)
    assert os.environ["TVM_NUM_THREADS"] == "1"


def test_an_odd_width_is_estimated_at_its_widened_speed():
    """A 27-channel convolution runs at 32 channels (widen.py): its estimate is full vectors
    less the 5 padded columns, not the single lanes its own width divides into."""
    from tvm import relax

    from anychip.backends.cpu.kernel_choice import _conv

    def speed(channels: int) -> float:
        x = relax.Var("x", relax.TensorType([1, 16, 16, 32], "float32"))
        w = relax.const(np.zeros((channels, 32, 3, 3), np.float32))
        call = relax.op.nn.conv2d(x, w, padding=[1, 1, 1, 1], data_layout="NHWC")
        bb = relax.BlockBuilder()
        with bb.function("main", [x]):
            out = bb.emit(call)
            bb.emit_func_output(out)
        return _conv(bb.get()["main"].body.blocks[0].bindings[0].value, winograd=False)[1]

    assert speed(27) == pytest.approx(27 / 32)
    assert speed(32) == 1.0


def test_a_winograd_convolution_is_estimated_at_its_transformed_cost():
    """ResNet's 56x56x64 3x3 convolution: Winograd F(4, 3) (backends/host/winograd.py) does
    a quarter of the products, so TVM's estimate with it is well under the direct one."""
    from tvm import relax

    from anychip.backends.cpu.kernel_choice import choose_kernels

    x = relax.Var("x", relax.TensorType([1, 56, 56, 64], "float32"))
    w = relax.const(np.zeros((64, 64, 3, 3), np.float32))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        out = bb.emit(relax.op.nn.conv2d(x, w, padding=[1, 1, 1, 1], data_layout="NHWC"))
        bb.emit_func_output(out)
    with_it, without = (choose_kernels(bb.get(), 2, on)["tvm_ms"] for on in (True, False))
    assert with_it < 0.6 * without
