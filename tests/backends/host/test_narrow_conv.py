"""Convolutions with a few output channels (backends/host/narrow_conv.py): vectorized along
the output row, the accumulators channel-major in registers. Outputs as ONNX Runtime's over
kernel sizes, pads, dilations, a vertical stride and a batch; what the rewrite takes and what
it leaves to the GEMM schedule; the kernel is vectorized and, in a parallel build, parallel."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip


def _model(cout, kernel, pads=(0, 0, 0, 0), strides=(1, 1), dilations=(1, 1), size=(20, 32),
           batch=1, cin=8):
    """conv 1x1 (NHWC from here on) -> conv with `cout` output channels + bias -> tanh."""
    rng = np.random.default_rng(cout * 10 + kernel[0])
    inits = [numpy_helper.from_array((rng.standard_normal((cin, 4, 1, 1)) / 2)
                                     .astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((cout, cin, *kernel))
                                      / np.sqrt(cin * kernel[0] * kernel[1]))
                                     .astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]),
             helper.make_node("Conv", ["a", "w2", "b2"], ["c"], pads=list(pads),
                              strides=list(strides), dilations=list(dilations)),
             helper.make_node("Tanh", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes, "narrow", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                        [batch, 4, *size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


CASES = {
    "rgb 9x9 (style transfer)": dict(cout=3, kernel=(9, 9), pads=(4, 4, 4, 4)),
    "one channel 3x3": dict(cout=1, kernel=(3, 3), pads=(1, 1, 1, 1)),
    "four channels 1x1": dict(cout=4, kernel=(1, 1)),
    "dilated, asymmetric pads": dict(cout=2, kernel=(3, 3), pads=(0, 2, 1, 2),
                                     dilations=(2, 2), size=(21, 32)),
    "vertical stride, batch 2": dict(cout=3, kernel=(3, 3), pads=(1, 1, 1, 1),
                                     strides=(2, 1), batch=2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_narrow_convolutions_run_along_the_row_and_match_onnxruntime(case):
    model = _model(**CASES[case])
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()
    compiled = anychip.compile(model, target="cpu")
    assert compiled.report["narrow_convs"] == 1, compiled.report


@pytest.mark.parametrize("change", [dict(cout=5, kernel=(3, 3), pads=(1, 1, 1, 1)),
                                    dict(cout=3, kernel=(3, 3), strides=(1, 2)),
                                    dict(cout=3, kernel=(3, 3), size=(20, 27))])
def test_wider_outputs_horizontal_strides_and_ragged_rows_are_left(change):
    compiled = anychip.compile(_model(**change), target="cpu")
    assert compiled.report.get("narrow_convs") == 0, compiled.report


@pytest.mark.parametrize("parallel", [False, True])
def test_the_kernel_is_vectorized_and_parallel_in_a_parallel_build(parallel):
    import tvm
    from tvm import te

    from anychip.backends.host.narrow_conv import conv2d_rows, schedule_rows

    x = te.placeholder((1, 8, 22, 34), name="x")
    w = te.placeholder((3, 8, 3, 3), name="w")
    func = te.create_prim_func([x, w, conv2d_rows(x, w, [1, 1], [0, 0, 0, 0], [1, 1],
                                                  (20, 32))])
    sch = schedule_rows(func, tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"}), parallel)
    assert sch is not None
    text = sch.mod.script()
    assert "T.vectorized(" in text and ("T.parallel(" in text) == parallel, text
    # the accumulators channel-major: [.., channel, pixel]
    assert "conv2d_rows_local[v_b, v_y, v_o, v_xx]" in text, text
