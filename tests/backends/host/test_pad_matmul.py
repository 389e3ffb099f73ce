"""backends/host/pad_matmul.py: matmuls of an odd output width (ViT's 197-token attention
scores) are widened to a multiple of 8 for the GEMM schedule's vectors and sliced back; the
outputs match ONNX Runtime's on the original model, for a constant weight and for a product
of two activations, and even widths are left alone."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip


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
