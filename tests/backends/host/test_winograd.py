"""backends/host/winograd.py: 3x3 stride-1 convolutions as Winograd F(m x m, 3 x 3). The
transform matrices compute a correlation exactly (in float64), the estimate picks Winograd
where the GEMM's rows outweigh the transformed weight and not on small maps, and compiled
models that take it match ONNX Runtime on ragged, asymmetrically padded, batched maps with
the epilogues fusion puts after it (relu, residual add, concatenation, NCHW output)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.backends.host import winograd


@pytest.mark.parametrize("m", winograd.TILES)
def test_transform_matrices_compute_a_correlation(m):
    a, b, g = winograd.transform_matrices(m)
    rng = np.random.default_rng(m)
    d, w = rng.standard_normal(m + 2), rng.standard_normal(3)
    got = a.T @ ((g @ w) * (b.T @ d))
    want = np.correlate(d, w, mode="valid")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_the_estimate_takes_large_maps_and_leaves_small_ones():
    assert winograd.winograd_tile(1, 56, 56, 64, 64) == 4      # ResNet's first stage
    assert winograd.winograd_tile(1, 7, 7, 512, 512) is None   # the weight dominates
    assert winograd.winograd_tile(1, 3, 3, 64, 64) is None     # no whole 4x4 or gain


def _model(n, c, o, h, w, pads, epilogue):
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(o)).astype(np.float32)
    out_h, out_w = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Conv", ["r", "W", "B"], ["y"], pads=pads)]
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
    shape = [n, o, out_h, out_w]
    if epilogue == "relu":
        nodes.append(helper.make_node("Relu", ["y"], ["out"]))
    elif epilogue == "residual":
        skip = rng.standard_normal((1, o, out_h, out_w)).astype(np.float32)
        inits.append(numpy_helper.from_array(skip, "S"))
        nodes += [helper.make_node("Add", ["y", "S"], ["s"]),
                  helper.make_node("Relu", ["s"], ["out"])]
    else:   # concatenated with the convolution's input: outputs no tile of it covers
        nodes += [helper.make_node("Relu", ["y"], ["a"]),
                  helper.make_node("Concat", ["a", "r"], ["out"], axis=1)]
        shape = [n, o + c, out_h, out_w]
    graph = helper.make_graph(
        nodes, "wino", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# (batch, in channels, out channels, height, width, ONNX pads, epilogue)
CASES = {
    "square_relu": (1, 32, 32, 24, 24, [1, 1, 1, 1], "relu"),
    "ragged_residual": (1, 16, 48, 17, 23, [1, 1, 1, 1], "residual"),
    "asymmetric_pads_batch": (2, 24, 32, 15, 14, [0, 1, 2, 0], "relu"),
    "concat": (1, 32, 16, 20, 20, [1, 1, 1, 1], "concat"),
    "unpadded": (1, 32, 16, 22, 22, [0, 0, 0, 0], "relu"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_winograd_convolutions_match_onnx_runtime(case):
    model = _model(*CASES[case])
    art = anychip.compile(model, target="cpu", dispatch=False)
    assert art.report["winograd_convs"] == 1   # the case exercises the transform
    report = anychip.verify(model, target="cpu", dispatch=False)
    assert report.passed, report.summary()
    direct = anychip.compile(model, target="cpu", dispatch=False, winograd=False)
    assert not direct.report.get("winograd_convs")


def test_two_transformed_convolutions_joined_in_one_kernel_match_onnx_runtime():
    """Inception's pattern: two 3x3 convolutions of one input joined along the channels; fusion
    puts both output transforms in one kernel, and the second one's rows cannot be computed
    under the first one's tiles (they are inlined into the join instead)."""
    rng = np.random.default_rng(2)
    inits, nodes = [], [helper.make_node("Relu", ["x"], ["r"])]
    for name, outputs in (("a", 32), ("b", 16)):
        weight = (rng.standard_normal((outputs, 32, 3, 3)) / 17).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{name}"))
        nodes.append(helper.make_node("Conv", ["r", f"w{name}"], [name], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Concat", ["a", "b"], ["out"], axis=1))
    graph = helper.make_graph(
        nodes, "joined", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 20, 20])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 48, 20, 20])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert anychip.compile(model, target="cpu", dispatch=False).report["winograd_convs"] == 2
    report = anychip.verify(model, target="cpu", dispatch=False)
    assert report.passed, report.summary()
