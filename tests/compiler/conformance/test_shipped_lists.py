"""The shipped expected-failure lists (backends/conformance/<target>.yaml) stay true.

The whole suite takes tens of minutes per target, so CI runs a fixed, spread-out sample of it
(every STRIDE-th case, all operators alike) on each target that has a list and can execute or
simulate here: a case listed as failing that now passes, or a passing case that now fails,
fails this test, exactly as `anychip conformance` would on the full run.
"""

from __future__ import annotations

import pytest

from anychip.compiler.conformance import cases as case_store
from anychip.compiler.conformance import expected as exp
from anychip.compiler.conformance import run_conformance
from anychip.compiler.pytest_plugin import require_runnable

STRIDE = 20


def _listed_targets() -> list[str]:
    return sorted(p.stem for p in exp.expected_dir().glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("target", _listed_targets())
def test_sample_of_the_suite_matches_the_shipped_list(target):
    base, _, mode = target.partition("@")   # cpu@symbolic.yaml: the symbolic-shape path
    if base != "ort":                    # ort.yaml: ONNX Runtime on the same harness
        require_runnable(base)
    sample = case_store.collect()[::STRIDE]
    report = run_conformance(base, selected=sample, jobs=2, symbolic=mode == "symbolic")
    listed = exp.load_expected(target)
    check = exp.check(report.results, listed, str(exp.expected_path(target)))
    assert check.ok, (f"{len(check.new_failures)} new failures "
                      f"{[(r.name, r.reason[:120]) for r in check.new_failures][:5]}, "
                      f"unexpected passes {[r.name for r in check.unexpected_passes][:5]}")
    assert report.count("passed") > len(sample) // 2   # the sample really ran
