"""Pooling on the cpu backend goes to torch's kernels: max pooling with even or uneven pads
(ONNX's SAME_UPPER and Caffe2 exports pad bottom/right only: -inf padding first) keeping a NaN
anywhere in its window, average pooling with and without the pads counted. Outputs match ONNX
Runtime, NaN where it has NaN."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip


def _pool(op: str, pads: list[int], strides: int = 2, count_include_pad: int = 0,
          kernel: int = 3) -> onnx.ModelProto:
    """A conv (NHWC on cpu) then the pooling, on a [1, 8, 13, 13] image."""
    rng = np.random.default_rng(9)
    w = numpy_helper.from_array((rng.standard_normal((8, 8, 1, 1)) / 3).astype(np.float32), "w")
    attrs = {"kernel_shape": [kernel, kernel], "strides": [strides, strides], "pads": pads}
    if op == "AveragePool":
        attrs["count_include_pad"] = count_include_pad
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node(op, ["c"], ["y"], **attrs)]
    out = [(13 + pads[i] + pads[i + 2] - kernel) // strides + 1 for i in (0, 1)]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 13, 13])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8, *out])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op, pads, count", [
    ("MaxPool", [1, 1, 1, 1], 0),
    ("MaxPool", [0, 0, 1, 1], 0),        # bottom/right only: -inf padding, then no pads
    ("MaxPool", [1, 0, 2, 1], 0),
    ("AveragePool", [1, 1, 1, 1], 0),
    ("AveragePool", [1, 1, 1, 1], 1),
    ("AveragePool", [0, 0, 0, 0], 0),
])
def test_pooling_runs_in_the_library_and_matches_onnxruntime(op, pads, count):
    model = _pool(op, pads, count_include_pad=count)
    art = anychip.compile(model, target="cpu", dispatch=True)
    root = "max_pool2d" if op == "MaxPool" else "avg_pool2d"
    assert art.report["dispatch"]["calls"].get(f"anychip.{root}") == 1
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()
    assert report.max_abs < 1e-5


@pytest.mark.parametrize("pads", [[1, 1, 1, 1], [0, 0, 1, 1]])
def test_max_pooling_keeps_a_nan_anywhere_in_its_window(pads):
    import onnxruntime as ort

    model = _pool("MaxPool", pads, strides=1)
    x = np.random.default_rng(1).standard_normal((1, 8, 13, 13)).astype(np.float32)
    x[0, 3, 6, 6] = np.nan                 # the 1x1 conv spreads it over every channel
    got = list(anychip.compile(model, target="cpu", dispatch=True).run({"x": x}).values())[0]
    conv = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # NaN exactly in the windows that hold (6, 6): rows and columns 6-2..6 shifted by the pad
    top, left = pads[0], pads[1]
    want = np.zeros(got.shape[2:], bool)
    for i in range(got.shape[2]):
        for j in range(got.shape[3]):
            want[i, j] = i - top <= 6 <= i - top + 2 and j - left <= 6 <= j - left + 2
    assert (np.isnan(got[0]) == want).all()
    assert np.allclose(got[~np.isnan(got)], conv[~np.isnan(got)], atol=1e-5)
