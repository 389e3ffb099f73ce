"""ConvTranspose after a convolution on cpu (backends/host/conv_transpose.py): layout
conversion makes it NHWC, which TVM 0.27 cannot lower (such models did not compile); it
becomes one ordinary convolution and a pixel shuffle. Outputs vs ONNX Runtime over kernel
sizes, strides, pads (asymmetric, larger than the kernel), output_padding, dilation, groups
and a symbolic batch; the graph has no transposed convolution left and only the pixel
shuffle's permute between the model's input and output transposes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from tests.backends.cpu.test_layout import _lowered_ops


def _model(kernel, stride, pads=(0, 0, 0, 0), output_padding=(0, 0), dilation=(1, 1),
           groups=1, channels=(4, 8, 6), size=(5, 7), batch=1, bias=True) -> onnx.ModelProto:
    """conv 3x3 (so layout conversion makes the model NHWC) -> ConvTranspose -> conv 1x1."""
    rng = np.random.default_rng(sum(kernel) * 7 + sum(stride) + sum(pads) + groups)
    cin, mid, cout = channels
    inits = [numpy_helper.from_array((rng.standard_normal((mid, cin, 3, 3)) / 3)
                                     .astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((mid, cout // groups, *kernel)) / 3)
                                     .astype(np.float32), "wt"),
             numpy_helper.from_array((rng.standard_normal((4, cout, 1, 1)) / 3)
                                     .astype(np.float32), "w2")]
    t_inputs = ["a", "wt"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "bt"))
        t_inputs.append("bt")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", t_inputs, ["t"], kernel_shape=list(kernel),
                              strides=list(stride), pads=list(pads),
                              output_padding=list(output_padding), dilations=list(dilation),
                              group=groups),
             helper.make_node("Conv", ["t", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv_transpose",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, *size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


CASES = {
    "2x2/2 (U-Net)": dict(kernel=(2, 2), stride=(2, 2)),
    "4x4/2 pad 1 (DCGAN)": dict(kernel=(4, 4), stride=(2, 2), pads=(1, 1, 1, 1)),
    "3x3/2 pad 1 out_pad 1": dict(kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1),
                                  output_padding=(1, 1)),
    "3x3/1 pad 1": dict(kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1)),
    "kernel < stride": dict(kernel=(2, 3), stride=(3, 4)),
    "asymmetric, pad > kernel": dict(kernel=(3, 2), stride=(2, 3), pads=(0, 2, 3, 1)),
    "dilated": dict(kernel=(3, 3), stride=(2, 2), dilation=(2, 3), pads=(1, 0, 2, 1)),
    "grouped": dict(kernel=(4, 4), stride=(2, 2), pads=(1, 1, 1, 1), groups=2),
    "depthwise-like": dict(kernel=(2, 2), stride=(2, 2), groups=2, channels=(4, 2, 2),
                           bias=False),
    "batch 3": dict(kernel=(3, 3), stride=(2, 2), batch=3, output_padding=(1, 0)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conv_transpose_after_a_conv_matches_onnxruntime(case):
    model = _model(**CASES[case])
    ops = _lowered_ops(model)
    assert "relax.nn.conv2d_transpose" not in ops, ops
    assert ops.count("relax.permute_dims") == 3, ops   # input, pixel shuffle, output
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()
    assert report.max_abs < 1e-4


def test_symbolic_batch_keeps_the_rewrite():
    model = _model(kernel=(2, 2), stride=(2, 2))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "n"
    del model.graph.value_info[:]
    ops = _lowered_ops(model)
    assert "relax.nn.conv2d_transpose" not in ops, ops
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 7)).astype(np.float32)
    report = anychip.verify(model, target="cpu", inputs={"x": x})
    assert report.passed, report.summary()


def test_weights_from_an_input_go_back_to_nchw():
    """A weight that is a graph input is not rearranged at compile time: the transposed
    convolution runs in NCHW between two transposes (TVM's own lowering), still correct."""
    model = _model(kernel=(2, 2), stride=(2, 2), bias=False)
    weight = next(i for i in model.graph.initializer if i.name == "wt")
    model.graph.input.append(helper.make_tensor_value_info("wt", TensorProto.FLOAT,
                                                           list(weight.dims)))
    value = numpy_helper.to_array(weight)
    model.graph.initializer.remove(weight)
    ops = _lowered_ops(model)
    assert ops.count("relax.nn.conv2d_transpose") == 1, ops
    x = np.random.default_rng(1).standard_normal((1, 4, 5, 7)).astype(np.float32)
    report = anychip.verify(model, target="cpu", inputs={"x": x, "wt": value})
    assert report.passed, report.summary()


@pytest.mark.parametrize("case,convs", [("2x2/2 (U-Net)", 1), ("4x4/2 pad 1 (DCGAN)", 4),
                                        ("kernel < stride", 6)])
def test_phases_share_a_convolution_only_when_they_share_the_window(case, convs):
    """A kernel the size of its stride: every phase reads the same input pixel, one 1x1
    convolution. 4x4/2 pad 1: the phases' 2x2 taps are at different offsets, a convolution
    each (one shared 3x3 window would compute 9 products for 4). A kernel shorter than its
    stride: the phases without a tap are zeros (2x3 of the 3x4 phases have taps), the others
    one convolution each. Counted right after the rewrite (later passes make some kernels TE)."""
    from tvm import relax

    from anychip.backends.host.conv_transpose import conv_transpose_as_conv
    from anychip.compiler.frontend import load_model
    from anychip.compiler.importer import to_relax

    mod = to_relax(load_model(_model(**CASES[case]), None, {}, None))
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OIHW"]})(mod)
    ops: list[str] = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            ops.append(str(expr.op.name))

    relax.analysis.post_order_visit(conv_transpose_as_conv(mod)["main"], visit)
    assert "relax.nn.conv2d_transpose" not in ops, ops
    assert ops.count("relax.nn.conv2d") == 2 + convs, ops


def test_a_stride_with_too_many_phases_goes_back_to_nchw():
    """9x9 = 81 phases (> MAX_PHASES): not 81 convolutions (a hostile 1000x1000 stride would
    be a million), TVM's NCHW lowering between two transposes; still ONNX Runtime's values."""
    model = _model(kernel=(3, 3), stride=(9, 9), size=(2, 3))
    ops = _lowered_ops(model)
    assert ops.count("relax.nn.conv2d_transpose") == 1, ops
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()
