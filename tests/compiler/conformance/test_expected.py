"""Expected failures as data: a new failure and an unexpected pass both fail the check;
--update-expected rewrites only the entries of the cases that ran."""

from __future__ import annotations

import pytest

from anychip.compiler.conformance import expected as exp
from anychip.compiler.conformance.engines import Result
from anychip.compiler.errors import AnychipError


def _r(name: str, status: str, reason: str = "") -> Result:
    return Result(name, "Op", status, reason)


def test_matching_list_is_ok():
    results = [_r("a", "passed"), _r("b", "failed", "wrong"), _r("c", "unsupported", "op")]
    check = exp.check(results, {"b": "failed: wrong", "c": "unsupported: op"})
    assert check.ok and len(check.expected_failures) == 2


def test_new_failure_and_unexpected_pass_fail_the_check():
    results = [_r("a", "failed", "new"), _r("b", "passed"), _r("c", "compiled")]
    check = exp.check(results, {"b": "failed: old", "c": "failed: old"})
    assert not check.ok
    assert [r.name for r in check.new_failures] == ["a"]
    assert [r.name for r in check.unexpected_passes] == ["b", "c"]   # compiled counts as good
    assert check.as_dict()["new_failures"] == ["a"]


def test_update_rewrites_only_cases_that_ran(tmp_path):
    (tmp_path / "cpu.yaml").write_text("cases:\n  old_keep: 'failed: x'\n  fixed: 'failed: y'\n")
    path = exp.update_expected("cpu", [_r("fixed", "passed"), _r("new", "unsupported", "dtype")],
                               "1.23.2", tmp_path)
    listed = exp.load_expected("cpu", tmp_path)
    assert listed == {"old_keep": "failed: x", "new": "unsupported: dtype"}
    assert path.read_text().startswith("# Conformance cases expected not to pass on 'cpu'")


def test_missing_file_is_empty_and_bad_file_is_a_clear_error(tmp_path):
    assert exp.load_expected("nowhere", tmp_path) == {}
    (tmp_path / "bad.yaml").write_text("cases: [1, 2]\n")
    with pytest.raises(AnychipError, match="--update-expected"):
        exp.load_expected("bad", tmp_path)


def test_every_shipped_list_is_valid():
    directory = exp.expected_dir()
    for path in sorted(directory.glob("*.yaml")):
        listed = exp.load_expected(path.stem, directory)
        assert all(v.split(":", 1)[0] in ("failed", "unsupported") for v in listed.values()), path
