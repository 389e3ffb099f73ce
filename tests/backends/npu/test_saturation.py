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


def test_the_quick_range_check_finds_what_the_full_check_finds():
    """_np_cast converts a tensor back only when its largest magnitude overflows the dtype
    (rounding is monotonic): the report is the same as converting every tensor back."""
    import ml_dtypes

    from anychip.backends.npu.precision import _may_saturate, _np_cast

    f16_edge = 65519.99    # rounds to 65504; 65520 rounds to inf
    cases = [np.array([1.0, -2.0], np.float32), np.array([f16_edge, -f16_edge], np.float32),
             np.array([0.0, 65520.0], np.float32), np.array([-65520.0, 3.0], np.float32),
             np.array([np.inf, 1.0], np.float32), np.array([np.nan, 1e9], np.float32),
             np.array([3.39e38, 1.0], np.float32), np.array([3.4e38], np.float32),
             np.array([1e300, 1.0], np.float64)]
    for array in cases:
        for dtype in ("float16", "bfloat16", "float32"):
            if array.dtype == np.float32 and dtype == "float32":
                continue
            found: list = []
            _np_cast(array, dtype, "t", found)
            with np.errstate(over="ignore", invalid="ignore"):
                back = array.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
            full = bool((np.isinf(back.astype(np.float32)) & np.isfinite(array)).any())
            assert bool(found) == full, (array, dtype)
            assert _may_saturate(array, back.dtype) or not full


def _fully_masked_rows():
    """masked_fill with float32's minimum (DeBERTa-v2, many Hugging Face models): a row whose
    every key is masked is uniform in float32 and NaN once the fill saturates to -inf."""
    fill = numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "fill")
    nodes = [helper.make_node("Cast", ["keep"], ["keepb"], to=TensorProto.BOOL),
             helper.make_node("Where", ["keepb", "x", "fill"], ["m"], name="masked_fill"),
             helper.make_node("Softmax", ["m"], ["y"], axis=-1)]
    graph = helper.make_graph(
        nodes, "fill", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
                        helper.make_tensor_value_info("keep", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [fill])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_failure_with_nan_names_the_saturated_constant_also_through_gears():
    """verify's FAIL line says which constant became inf and what to do (the NaN alone sent
    users to `compare`); the gears' report carries the entries up from each gear."""
    art = anychip.compile(_fully_masked_rows(), target="ascend-910b",
                          precision_mode="force_fp16", dims={"batch": (1, 2)},
                          gears={"batch": (2,)})
    assert [e["tensor"] for e in art.report["saturated_constants"]] == ["fill"]
    feed = {"x": np.ones((2, 4), np.float32), "keep": np.array([[1, 0, 1, 0], [0, 0, 0, 0]])}
    report = anychip.verify(_fully_masked_rows(), target="ascend-910b",
                            precision_mode="force_fp16", dims={"batch": (1, 2)},
                            gears={"batch": (2,)}, inputs=feed)
    assert not report.passed
    line = report.summary()
    assert "exceed float16's range and became inf (first: 'fill'" in line, line
    assert "--precision fp32" in line
