"""Small depthwise convolutions of NHWC data stay in TVM (torch_library._depthwise_for_tvm)
and get backends/host/depthwise.py's schedule: their outputs match ONNX Runtime at strides,
dilations, batches, window sizes, channel counts (16- and 8-lane chunks), epilogues
(bias, residual, relu, clip, HardSwish) and special values; sigmoid-like epilogues and large
ones stay on the library. Also: TIR's isnan vectorizes (ieee.vectorizable_isnan)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.backends.host import depthwise


def _depthwise(c: int, hw: int, k: int = 3, stride: int = 1, dilation: int = 1,
               batch: int = 1, act: str | None = "relu",
               residual: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(c * 100 + hw)
    pad = dilation * (k - 1) // 2
    out = (hw + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    inits = [numpy_helper.from_array((rng.standard_normal((c, 1, k, k)) / 2).astype(np.float32),
                                     "w"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], group=c, pads=[pad] * 4,
                              strides=[stride] * 2, dilations=[dilation] * 2)]
    shape = [batch, c, out, out]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, hw, hw])]
    z = "z"
    if residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, shape))
        nodes.append(helper.make_node("Add", ["z", "r"], ["s"]))
        z = "s"
    if act == "clip":   # ReLU6
        inits += [numpy_helper.from_array(np.array(v, np.float32), n)
                  for n, v in (("lo", 0.0), ("hi", 6.0))]
        nodes.append(helper.make_node("Clip", [z, "lo", "hi"], ["y"]))
    elif act is not None:
        nodes.append(helper.make_node({"relu": "Relu", "hardswish": "HardSwish",
                                       "sigmoid": "Sigmoid"}[act], [z], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [z], ["y"]))
    graph = helper.make_graph(nodes, "depthwise", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _scheduled(model, monkeypatch, **options) -> tuple[dict, int]:
    """(dispatch report, kernels the depthwise rule scheduled) of a fresh compile."""
    done = []
    real = depthwise.schedule_depthwise
    monkeypatch.setattr(depthwise, "schedule_depthwise",
                        lambda f, t, p: (lambda s: done.append(s is not None) or s)(real(f, t, p)))
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    report = anychip.compile(model, target="cpu", dispatch=True, **options).report["dispatch"]
    return report, sum(done)


@pytest.mark.parametrize("c, hw, k, stride, dilation, batch, act, residual", [
    (32, 14, 3, 1, 1, 1, "relu", False),
    (24, 12, 5, 2, 1, 1, "hardswish", False),   # 8-lane chunks, a 5x5 window, stride 2
    (16, 9, 3, 1, 2, 2, None, True),            # dilation 2, two images, residual, odd size
    (48, 7, 3, 2, 1, 1, "clip", False),
    (32, 8, 3, 1, 1, 1, "sigmoid", False),      # fast_math (the default): a polynomial
    (16, 20, 3, 1, 1, 3, "relu", False),        # 4 blocks of 5 padded rows an image, 3 images
    (32, 17, 3, 2, 1, 2, None, False),          # 9 output rows: blocks of 3, stride 2
    (160, 7, 5, 1, 1, 1, "relu", False),        # 7 rows: parallel by 10 chunks of channels
])
def test_small_depthwise_convolutions_run_in_tvm_and_match(c, hw, k, stride, dilation, batch,
                                                          act, residual, monkeypatch):
    model = _depthwise(c, hw, k, stride, dilation, batch, act, residual)
    report, scheduled = _scheduled(model, monkeypatch)
    assert report.get("calls", {}) == {}, report     # the convolution stayed in TVM
    assert scheduled == 1
    result = anychip.verify(model, target="cpu", dispatch=True)
    assert result.passed, result.summary()
    assert result.max_abs < 1e-5


def test_the_pad_is_made_per_block_of_rows_inside_the_parallel_loop():
    """The padded input of a block of output rows (reduction_kernel.PAD_ROWS) is made in the
    parallel row loop, so no padded copy of the whole image goes through memory."""
    import tvm
    from tvm import relax

    from anychip.backends.cpu.backend import host_cpu_name

    from .kernels import fused_kernel

    weight = relax.const(np.ones((3, 3, 1, 32), np.float32))
    func = fused_kernel(lambda bb, x: bb.emit(relax.op.nn.conv2d(
        x, weight, padding=1, groups=32, data_layout="NHWC", kernel_layout="HWIO")),
        (2, 56, 56, 32))
    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name(), "num-cores": 2})
    with target:
        text = depthwise.schedule_depthwise(func, target, parallel=True).mod.script()
    parallel, pad = text.index("T.parallel("), text.index('T.sblock("pad_temp")')
    conv = text.index("T.sblock(\"", pad + 1)
    assert parallel < pad < conv, text
    # 2 images x 56 rows in blocks of 8 (the largest divisor of 56 up to PAD_ROWS)
    assert "T.parallel(T.int64(14))" in text, text


def test_special_values_propagate_as_in_onnx_runtime():
    import onnxruntime as ort

    model = _depthwise(32, 10, act="hardswish")
    x = np.random.default_rng(1).standard_normal((1, 32, 10, 10)).astype(np.float32)
    x[0, :4, 3, 3], x[0, 5, 0, 0], x[0, 6, 9, 9] = np.nan, np.inf, -np.inf
    got = list(anychip.compile(model, target="cpu", dispatch=True).run({"x": x}).values())[0]
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(want).any()
    assert np.array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["sigmoid_libm", "large", "odd_channels"])
def test_other_depthwise_convolutions_stay_on_the_library(case, monkeypatch):
    """A sigmoid epilogue with fast_math off (oneDNN fuses it, TVM would call libm per
    element), more than TVM_DEPTHWISE_MAX_FLOPS, or channels not a multiple of 8: the
    library's call."""
    model = {"sigmoid_libm": lambda: _depthwise(32, 14, act="sigmoid"),
             "large": lambda: _depthwise(64, 56),
             "odd_channels": lambda: _depthwise(12, 14)}[case]()
    options = {"fast_math": False} if case == "sigmoid_libm" else {}
    report, scheduled = _scheduled(model, monkeypatch, **options)
    assert report["total"] == 1 and scheduled == 0, report
    result = anychip.verify(model, target="cpu", dispatch=True, **options)
    assert result.passed, result.summary()


def test_isnan_vectorizes():
    """A vectorized loop selecting on isnan compiles to vector compares, not a scalar loop."""
    import tvm
    from tvm import te

    from anychip.backends.cpu.backend import host_cpu_name
    from anychip.backends.host.ieee import vectorizable_isnan

    vectorizable_isnan()
    a = te.placeholder((64,), "float32", name="a")
    b = te.compute((64,), lambda i: tvm.tirx.Select(tvm.tirx.isnan(a[i]), a[i],
                                                      tvm.tirx.const(0.0, "float32")), name="b")
    func = te.create_prim_func([a, b]).with_attr("global_symbol", "main")
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    loop = sch.get_loops(sch.get_sblock("b"))[0]
    sch.vectorize(sch.split(loop, factors=[None, 8])[1])
    lib = tvm.compile(sch.mod, target=tvm.target.Target(
        {"kind": "llvm", "mcpu": host_cpu_name()}))
    llvm_ir = lib.mod.inspect_source("ll")   # LLVM writes the test inverted (ord) or not
    assert "fcmp ord <8 x float>" in llvm_ir or "fcmp uno <8 x float>" in llvm_ir
    out = tvm.runtime.tensor(np.zeros(64, np.float32))
    x = np.arange(64, dtype=np.float32)
    x[[3, 40]] = np.nan
    lib["main"](tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(np.isnan(out.numpy()), np.isnan(x))


def test_a_map_of_few_rows_is_parallel_by_chunks_of_channels():
    """A 7x7 map's one block of 7 rows ran on one of the 2 threads (EfficientNet's 7x7x1152
    5x5 convolutions at 27 GFLOP/s where its 14x14 ones ran at 70-88): its 72 chunks of 16
    channels are the parallel loop instead, each padding its own slice of the map inside
    it. 14 rows (two blocks of 7) stay parallel by rows."""
    import tvm
    from tvm import relax

    from anychip.backends.cpu.backend import host_cpu_name

    from .kernels import fused_kernel

    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name(), "num-cores": 2})
    for hw, loop in ((7, 72), (14, 2)):
        weight = relax.const(np.ones((5, 5, 1, 1152), np.float32))
        func = fused_kernel(lambda bb, x, w=weight: bb.emit(relax.op.nn.conv2d(
            x, w, padding=2, groups=1152, data_layout="NHWC", kernel_layout="HWIO")),
            (1, hw, hw, 1152))
        with target:
            text = depthwise.schedule_depthwise(func, target, parallel=True).mod.script()
        assert text.count("T.parallel(") == 1, text
        parallel, pad = text.index("T.parallel("), text.index('T.sblock("pad_temp")')
        assert parallel < pad and f"T.parallel(T.int64({loop}))" in text, text
