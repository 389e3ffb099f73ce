"""backends/host/widen.py: matmuls of an odd output width (ViT's 197-token attention scores)
are widened to a multiple of 8 for the GEMM schedule's vectors and sliced back, and on
16-lane targets convolutions and matmuls of 8 mod 16 widths (a 1000-class head) to a multiple
of 16, the slice moved past their elementwise epilogue; the outputs match ONNX Runtime's on
the original model, for a constant weight and for a product of two activations, and other
widths are left alone."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.backends.host.widen import widened_width

tvm = pytest.importorskip("tvm")


def _model(width: int):
    rng = np.random.default_rng(width)
    f = TensorProto.FLOAT
    weight = numpy_helper.from_array((rng.standard_normal((16, width)) / 4).astype(np.float32),
                                     "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]),                 # [2, 5, width]
             helper.make_node("Transpose", ["xw"], ["xwT"], perm=[0, 2, 1]),  # [2, width, 5]
             helper.make_node("MatMul", ["xw", "xwT"], ["scores"]),           # [2, 5, 5]
             helper.make_node("MatMul", ["xwT", "xw"], ["gram"])]             # [2, width, width]
    graph = helper.make_graph(
        nodes, "odd", [helper.make_tensor_value_info("x", f, [2, 5, 16])],
        [helper.make_tensor_value_info("gram", f, [2, width, width]),
         helper.make_tensor_value_info("scores", f, [2, 5, 5])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("width, widened", [(37, 2), (24, 0)])
def test_odd_widths_are_padded_and_match_onnx_runtime(width, widened, monkeypatch):
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    model = _model(width)
    art = anychip.compile(model, target="cpu", dispatch=False)
    # x @ w (37 wide) and the Gram matrix (37 wide); the 5-wide scores are too narrow
    assert art.report["matmuls_widened"] == widened
    report = anychip.verify(model, target="cpu", dispatch=False)
    assert report.passed, report.summary()


def _conv_head(width: int, act: str):
    """A 1x1 convolution to `width` channels, bias, an activation, a per-channel scale (a
    constant the pass pads), a residual of the convolution itself (both operands sliced),
    global average pooling: a SqueezeNet head."""
    rng = np.random.default_rng(width)
    f = TensorProto.FLOAT
    inits = [numpy_helper.from_array((rng.standard_normal(shape) / 8).astype(np.float32), name)
             for name, shape in (("w", (width, 32, 1, 1)), ("b", (width,)),
                                 ("s", (1, width, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node(act, ["c"], ["a"]),
             helper.make_node("Div", ["a", "s"], ["d"]),
             helper.make_node("Add", ["d", "c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", f, [1, 32, 6, 6])],
                              [helper.make_tensor_value_info("y", f, [1, width, 1, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("width, act, widened", [(136, "Relu", 1), (200, "Sigmoid", 1),
                                                 (120, "Relu", 0), (144, "Relu", 0)])
def test_convolution_widths_of_8_mod_16_get_whole_vectors(width, act, widened, monkeypatch):
    from anychip.backends.cpu.backend import host_cpu_name
    from anychip.backends.host.lanes import vector_lanes

    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    lanes = vector_lanes(tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name()}))
    model = _conv_head(width, act)
    art = anychip.compile(model, target="cpu", dispatch=False)
    assert art.report["convs_widened"] == (widened if lanes >= 16 else 0)
    report = anychip.verify(model, target="cpu", dispatch=False)
    assert report.passed, report.summary()


def test_widths_computed():
    assert widened_width(1000, 16) == 1008
    assert widened_width(1000, 8) == 1000       # 8-lane targets: 1000 already whole
    assert widened_width(120, 16) == 120        # under MIN_WIDE_WIDTH: 7% more work
    assert widened_width(197, 16) == 208        # odd: 8 | 200, then 16 | 208
    assert widened_width(197, 8) == 200         # 8 lanes: a multiple of 8 is whole
    assert widened_width(45, 16) == 48          # under MIN_WIDE_WIDTH: 8 lanes
    assert widened_width(27, 16) == 32          # an ESPCN's 3 x 3^2 channels
    assert widened_width(7, 16) == 7            # under MIN_WIDTH: left
    assert widened_width(768, 16) == 768


def test_the_slice_moves_past_the_elementwise_epilogue():
    """conv -> bias -> relu -> x * relu (two slices of one wide tensor) -> mean: one slice
    left, before the mean, so the epilogue is computed on the wide tile."""
    from tvm import relax

    from anychip.backends.host.widen import widen_outputs

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 5, 5, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = relax.const(rng.standard_normal((1, 1, 32, 136)).astype(np.float32))
            c = bb.emit(relax.op.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="HWIO"))
            b = bb.emit(relax.op.add(c, relax.const(np.ones((1, 1, 1, 136), np.float32))))
            r = bb.emit(relax.op.nn.relu(b))
            m = bb.emit(relax.op.multiply(b, r))
            out = bb.emit_output(relax.op.mean(m, axis=[1, 2]))
        bb.emit_func_output(out)
    mod, matmuls, convs = widen_outputs(bb.get(), 16)
    assert (matmuls, convs) == (0, 1)
    text = mod["main"].script()
    assert text.count("R.strided_slice") == 1
    assert text.count("(1, 5, 5, 144)") >= 4   # conv, add, relu, multiply all wide


@pytest.mark.parametrize("width, widened", [(27, 1), (7, 0)])
def test_odd_convolution_widths_are_widened_to_whole_vectors(width, widened, monkeypatch):
    """An ESPCN-like 3 x 3^2 = 27-channel convolution had no vector at all (17 GFLOP/s): it
    is computed at 32 channels on any vector width; 7 stays (under MIN_WIDTH). Values as
    ONNX Runtime's, the kernel choice counts the padded columns."""
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    model = _conv_head(width, "Tanh")
    art = anychip.compile(model, target="cpu", dispatch=False)
    assert art.report["convs_widened"] == widened
    report = anychip.verify(model, target="cpu", dispatch=False)
    assert report.passed, report.summary()
