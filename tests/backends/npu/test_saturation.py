"""A float32 constant beyond float16's range (an attention mask's -1e9) placed in float16 is
one report entry naming the tensor, not numpy's bare "overflow encountered in cast"."""

from __future__ import annotations

import warnings

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import anychip


def _masked_scores():
    mask = numpy_helper.from_array(np.array([[0.0, -1e9, 0.0, -1e9]], np.float32), "mask")
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"], name="scores"),
             helper.make_node("Add", ["s", "mask"], ["m"], name="masked"),
             helper.make_node("Softmax", ["m"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "masked",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [mask, w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_saturated_mask_is_named_in_the_report():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # numpy's bare warning would raise
        art = anychip.compile(_masked_scores(), target="ascend-910b",
                              precision_mode="force_fp16")
    entries = art.report["saturated_constants"]
    assert [e["tensor"] for e in entries] == ["mask"]
    assert entries[0]["dtype"] == "float16" and entries[0]["values"] == 2
    assert entries[0]["max_abs"] == 1e9
    out = art.run({"x": np.ones((2, 4), np.float32)})["y"]
    np.testing.assert_allclose(out[:, [1, 3]], 0.0)       # -inf masked, as on the chip
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-3)
