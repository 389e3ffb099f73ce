"""The comparison rule and the tolerance table."""

from __future__ import annotations

import numpy as np
import pytest

from anychip.compiler.errors import AnychipError
from anychip.compiler.tolerances import EXACT, Tolerance, compare, tolerance_for


def test_rule_is_atol_plus_rtol_times_expected():
    tol = Tolerance(rtol=1e-2, atol=1e-3)
    e = np.array([1.0, 100.0], np.float32)
    assert compare(e + np.array([0.0109, 1.0009], np.float32), e, tol).passed
    result = compare(e + np.array([0.0, 1.2], np.float32), e, tol)
    assert not result.passed and result.mismatches == 1
    assert result.max_abs == pytest.approx(1.2, rel=1e-5)
    assert result.max_rel == pytest.approx(0.012, rel=1e-3)


def test_nan_and_inf_rules():
    tol = Tolerance(1e-3, 1e-3)
    e = np.array([np.nan, np.inf, -np.inf, 1.0])
    assert compare(e.copy(), e, tol).passed
    assert not compare(np.array([0.0, np.inf, -np.inf, 1.0]), e, tol).passed
    assert not compare(np.array([np.nan, -np.inf, -np.inf, 1.0]), e, tol).passed


def test_shape_mismatch_fails():
    assert not compare(np.zeros(3), np.zeros(4), Tolerance(1, 1)).passed


def test_integers_are_exact_whatever_the_precision():
    assert tolerance_for("fp16", np.int64) is EXACT
    assert not compare(np.array([1, 2]), np.array([1, 3]), EXACT).passed


def test_reduced_precisions_are_looser_and_ordered():
    fp32, fp16, bf16 = (tolerance_for(p, np.float32) for p in ("fp32", "fp16", "bf16"))
    assert fp32.rtol < fp16.rtol < bf16.rtol
    assert tolerance_for("fp32", np.float32, training=True).rtol <= fp16.rtol


def test_unknown_precision_is_an_error():
    with pytest.raises(AnychipError, match="no tolerance for precision 'fp7'"):
        tolerance_for("fp7", np.float32)


def test_nan_where_the_reference_is_finite_is_counted_not_hidden():
    """max abs is taken over finite values, so an all-NaN output reads 'max abs 0': the
    comparison must still fail it and say how many values are not finite."""
    e = np.ones(6, np.float32)
    result = compare(np.full(6, np.nan, np.float32), e, tolerance_for("fp32", np.float32))
    assert not result.passed and result.max_abs == 0.0
    assert result.nonfinite == 6 and result.mismatches == 6


def _cast_model(to, weight_type=None):
    """x -> Conv (3x3, float32) -> [Cast to `to` -> Relu -> Cast back] -> y (float32 IO)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) / 3
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1])]
    if to is None:
        nodes.append(helper.make_node("Relu", ["a"], ["y"]))
    else:
        nodes += [helper.make_node("Cast", ["a"], ["h"], to=to),
                  helper.make_node("Relu", ["h"], ["r"]),
                  helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)]
    inits = [numpy_helper.from_array(w, "w")]
    if weight_type is not None:
        inits.append(helper.make_tensor("unused", weight_type, [1], [0]))
    graph = helper.make_graph(nodes, "cast",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             [1, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_model_computing_in_float16_inside_is_judged_by_float16s_row():
    """An fp32-IO model with an internal float16 Cast rounds to float16 in ONNX Runtime too,
    from float32 values that differ from ours in the last bits: outputs differ by float16's
    rounding (~1e-3), which the fp32 row (1e-4) refused. Such a model gets the fp16 row;
    bfloat16 inside, bf16's; a float32-only model keeps fp32's."""
    from onnx import TensorProto

    import anychip
    from anychip.compiler.tolerances import FLOAT_TOLERANCES, looser, model_precision

    assert model_precision(_cast_model(None)) is None
    assert model_precision(_cast_model(TensorProto.FLOAT16)) == "fp16"
    assert model_precision(_cast_model(TensorProto.FLOAT16, TensorProto.BFLOAT16)) == "bf16"
    assert looser("fp32", "fp16") == "fp16" and looser("bf16", "fp16") == "bf16"
    assert looser("fp32", None) == "fp32"
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32) * 4
    report = anychip.verify(_cast_model(TensorProto.FLOAT16), target="cpu",
                            inputs={"x": x})
    fp16 = FLOAT_TOLERANCES["fp16"]
    assert (report.outputs[0].rtol, report.outputs[0].atol) == (fp16.rtol, fp16.atol)
    assert report.passed, report.summary()
    plain = anychip.verify(_cast_model(None), target="cpu", inputs={"x": x})
    assert plain.outputs[0].rtol == FLOAT_TOLERANCES["fp32"].rtol and plain.passed
