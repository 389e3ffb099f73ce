"""A conformance run's report: counts, per-operator table, failure classes, JSON and JUnit."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from ..format_error import FORMAT_ERROR_MULTIPLIER
from .engines import COMPILED, FAILED, PASSED, UNSUPPORTED, Result
from .expected import ExpectationCheck


@dataclass
class TargetReport:
    target: str                  # a target name, or "ort"
    how: str                     # executed / simulated / compiled only / reference
    onnx_version: str
    results: list[Result]
    wall_s: float
    expectation: ExpectationCheck | None = None
    extra: dict = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def specialised(self) -> int:
        return sum(1 for r in self.results if r.status == PASSED and r.notes)

    @property
    def within_format(self) -> int:
        """Failed cases whose error a reduced precision's own storage error explains."""
        return sum(1 for r in self.results if r.status == FAILED and r.format_error == "within")

    def rate(self, status: str = PASSED) -> float:
        return self.count(status) / self.total if self.total else 0.0

    def as_dict(self, with_cases: bool = True) -> dict:
        d = {"target": self.target, "how": self.how, "onnx": self.onnx_version,
             "total": self.total, "passed": self.count(PASSED), "failed": self.count(FAILED),
             "unsupported": self.count(UNSUPPORTED), "compiled": self.count(COMPILED),
             "pass_rate": round(self.rate(PASSED), 4),
             "passed_with_specialised_inputs": self.specialised,
             "failed_within_format_error": self.within_format,
             "wall_s": round(self.wall_s, 1), **self.extra}
        if self.expectation is not None:
            d["expected"] = self.expectation.as_dict()
        if with_cases:
            d["cases"] = [{"name": r.name, "op": r.op, "status": r.status, "reason": r.reason,
                           "notes": r.notes, "seconds": r.seconds,
                           "format_error": r.format_error} for r in self.results]
        return d

    def summary(self) -> str:
        good = self.count(COMPILED) if self.how == "compiled only" else self.count(PASSED)
        word = "compiled" if self.how == "compiled only" else "passed"
        how = self.how + (f", {self.extra['precision_mode']}" if "precision_mode" in self.extra
                          else "") + (", symbolic dims" if self.extra.get("symbolic") else "")
        line = (f"{self.target} ({how}): {good}/{self.total} {word} "
                f"({100 * good / max(self.total, 1):.1f}%), {self.count(FAILED)} failed, "
                f"{self.count(UNSUPPORTED)} unsupported")
        if self.specialised:
            line += f"; {self.specialised} passed with shape inputs specialised at compile time"
        judged = [r for r in self.results if r.status == FAILED and r.format_error]
        if judged:
            line += (f"; of the failed, {self.within_format} within "
                     f"{FORMAT_ERROR_MULTIPLIER:g}x their precision's own "
                     f"storage error (rounding), {len(judged) - self.within_format} beyond it")
        return line + f"; {self.wall_s:.0f} s"


def per_op(results: list[Result]) -> list[tuple[str, Counter]]:
    """[(op, Counter(status))] sorted by op."""
    table: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        table[r.op][r.status] += 1
    return sorted(table.items())


_VOLATILE = [(re.compile(r"'[^']*'"), "'…'"), (re.compile(r"\d+"), "N"),
             (re.compile(r"\s+"), " ")]


def failure_classes(results: list[Result], top: int = 25) -> list[tuple[int, str, str]]:
    """[(count, class, example case)]: reasons with names and numbers blanked, most common."""
    counts: Counter = Counter()
    example: dict[str, str] = {}
    for r in results:
        if r.status in (PASSED, COMPILED):
            continue
        key = f"{r.status}: {r.reason}"
        for pattern, repl in _VOLATILE:
            key = pattern.sub(repl, key)
        key = key[:160]
        counts[key] += 1
        example.setdefault(key, r.name)
    return [(n, k, example[k]) for k, n in counts.most_common(top)]


def junit_xml(reports: list[TargetReport]) -> bytes:
    """One <testsuite> per target, one <testcase> per case. Known (listed) failures are
    skipped with their reason; new failures and unexpected passes are failures."""
    root = ET.Element("testsuites", name="anychip conformance")
    for rep in reports:
        new_bad = {r.name for r in rep.expectation.new_failures} if rep.expectation else None
        unexpected = {r.name for r in rep.expectation.unexpected_passes} \
            if rep.expectation else set()
        failures = skipped = 0
        suite = ET.SubElement(root, "testsuite", name=f"conformance.{rep.target}")
        for r in rep.results:
            case = ET.SubElement(suite, "testcase", classname=f"{rep.target}.{r.op}", name=r.name,
                                 time=f"{r.seconds:.3f}")
            if r.name in unexpected:
                failures += 1
                ET.SubElement(case, "failure", message="unexpected pass: remove it from the "
                              "expected-failure list (--update-expected)", type="unexpected-pass")
            elif r.status in (PASSED, COMPILED):
                if r.status == COMPILED or r.notes:
                    ET.SubElement(case, "system-out").text = "; ".join(
                        ([r.reason] if r.reason else []) + r.notes)
            elif new_bad is None or r.name in new_bad:
                failures += 1
                ET.SubElement(case, "failure", message=f"{r.status}: {r.reason}"[:1000],
                              type=r.status)
            else:
                skipped += 1
                ET.SubElement(case, "skipped", message=f"expected {r.status}: {r.reason}"[:1000])
        suite.set("tests", str(len(rep.results)))
        suite.set("failures", str(failures))
        suite.set("skipped", str(skipped))
        suite.set("errors", "0")
        suite.set("time", f"{rep.wall_s:.1f}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
