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
