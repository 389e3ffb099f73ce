"""The pool's isolation: a hanging case times out, a crashing case is one failed case, and
the cases after either still run (in a fresh worker)."""

from __future__ import annotations

from anychip.compiler.conformance import pool
from anychip.compiler.conformance.cases import Case
from anychip.compiler.conformance.pool import run_cases

RUNNER = "tests.compiler.conformance.faulty_runner:run_case"


def _case(name: str) -> Case:
    return Case(name, "Fake", b"", [], [], 1e-3, 1e-7)


def test_hang_and_crash_are_failed_cases_and_the_run_goes_on():
    cases = [_case(n) for n in ["test_ok_1", "test_hang", "test_ok_2", "test_crash", "test_ok_3"]]
    results = run_cases(cases, "fake", jobs=1, timeout=2.0, runner=RUNNER)
    by = {r.name: r for r in results}
    assert [r.name for r in results] == [c.name for c in cases]
    assert by["test_hang"].status == "failed"
    assert by["test_hang"].reason.startswith("timed out, and again after")
    assert "run alone (2 s x 2 x load factor)" in by["test_hang"].reason
    assert by["test_crash"].status == "failed"
    assert "crashed the worker (signal 6)" in by["test_crash"].reason
    assert all(by[n].status == "passed" for n in ["test_ok_1", "test_ok_2", "test_ok_3"])
    # each fault cost its worker: the three good cases ran in three different processes
    pids = {by[n].reason.rsplit(" ", 1)[-1] for n in ["test_ok_1", "test_ok_2", "test_ok_3"]}
    assert len(pids) == 3


def test_two_workers_keep_case_order():
    cases = [_case(f"test_ok_{i}") for i in range(6)]
    results = run_cases(cases, "fake", jobs=2, timeout=10.0, runner=RUNNER)
    assert [r.name for r in results] == [c.name for c in cases]
    assert {r.status for r in results} == {"passed"}
    assert len({r.reason.rsplit(" ", 1)[-1] for r in results}) == 2


def test_a_case_that_times_out_under_load_passes_when_run_alone_with_more_time():
    """A case slower than the limit is retried once alone with RETRY_FACTOR x the limit."""
    cases = [_case("test_ok_1"), _case("test_slow"), _case("test_ok_2")]
    results = run_cases(cases, "fake", jobs=2, timeout=2.0, runner=RUNNER)
    assert [r.name for r in results] == [c.name for c in cases]
    assert {r.status for r in results} == {"passed"}


def test_the_limit_scales_with_load(monkeypatch):
    monkeypatch.setattr(pool.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    monkeypatch.setattr(pool.os, "sched_getaffinity", lambda pid: {0, 1})
    assert pool.load_factor() == 4.5
    monkeypatch.setattr(pool.os, "getloadavg", lambda: (0.3, 0.0, 0.0))
    assert pool.load_factor() == 1.0
    monkeypatch.setattr(pool.os, "getloadavg", lambda: (99.0, 0.0, 0.0))
    assert pool.load_factor() == pool.MAX_LOAD_FACTOR
