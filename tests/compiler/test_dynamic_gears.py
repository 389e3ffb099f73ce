"""npu gears: a symbolic dim on a static-shape family compiles one program per gear; the
runner pads to the smallest gear that fits; padding that changes the result is refused."""

from __future__ import annotations

import numpy as np
import pytest

import anychip
from anychip.compiler.errors import AnychipError
from anychip.compiler.frontend import load_model
from anychip.compiler.gears import default_gears
from anychip.compiler.reference import run_onnxruntime
from anychip.compiler.tolerances import compare, tolerance_for

from .test_dynamic_shapes import conv_batch_model, sequence_model


def test_default_gears_are_powers_of_two_within_the_bounds_thinned_to_four():
    assert default_gears(1, 8) == (1, 2, 4, 8)
    assert default_gears(3, 3) == (3,)
    assert default_gears(1, 2048) == (1, 16, 128, 2048)
    assert default_gears(5, 12) == (5, 8, 12)


@pytest.mark.slow
def test_a_batch_gear_artifact_pads_to_the_smallest_gear_and_matches_onnxruntime():
    model = conv_batch_model()
    art = anychip.compile(model, target="ascend-910b", dims={"batch": (1, 8)},
                          gears={"batch": (2, 8)})
    assert [g["sizes"] for g in art.manifest["gears"]] == [{"batch": 2}, {"batch": 8}]
    assert art.manifest["gear_modes"] == {"batch": "padded"}
    report = art.report
    assert [g["sizes"] for g in report["gears"]] == [{"batch": 2}, {"batch": 8}]
    assert all(g["compile_s"] > 0 and g["size_bytes"] > 0 for g in report["gears"])
    reference = load_model(model).original
    rng = np.random.default_rng(0)
    for batch in (1, 5):   # padded to gear 2 and gear 8
        x = rng.standard_normal((batch, 4, 8, 8)).astype(np.float32)
        got = art.run({"x": x})["y"]
        expected = run_onnxruntime(reference, {"x": x}, "ref")[0]
        assert got.shape == (batch, 5)
        assert compare(got, expected, tolerance_for(art.precision, expected.dtype)).passed
    with pytest.raises(AnychipError, match="symbol 'batch' is 9 .* outside its bounds 1..8"):
        art.run({"x": np.zeros((9, 4, 8, 8), np.float32)})


def test_padding_a_softmax_over_the_sequence_makes_the_symbol_exact_gear_only():
    model = sequence_model()
    art = anychip.compile(model, target="ascend-910b", dims={"seq": (2, 8)},
                          gears={"seq": (4, 8)})
    assert art.manifest["gear_modes"] == {"seq": "exact"}
    why = art.report["gear_symbols"]["seq"]["why"]
    assert "changes output 'y'" in why and "does not mask" in why
    with pytest.raises(AnychipError, match=r"no gear serves seq=5.*exact: padding changes"):
        art.run({"x": np.zeros((2, 5, 8), np.float32)})
    report = anychip.verify(model, target="ascend-910b", dims={"seq": (2, 8)},
                            gears={"seq": (4, 8)})
    assert report.passed, report.summary()
    assert [r.sizes for r in report.by_shape] == [{"seq": 4}, {"seq": 8}]
