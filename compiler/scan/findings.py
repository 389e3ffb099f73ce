"""What `anychip scan` reports: findings, skipped files and the result of one scan.

A finding is plain data (picklable, JSON-able) so worker processes can return it and every
output format (text, JSON, Markdown, SARIF) renders the same list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

# Severity, worst first. `blocks`: cannot run off NVIDIA as is and has no drop-in portable
# form; `port`: fails or misbehaves off NVIDIA but a known portable form exists; `info`: worth
# knowing while porting, works as is.
SEVERITIES = ("blocks", "port", "info")


def worst(severities) -> str | None:
    """The worst of some severities (None for none)."""
    ranked = [SEVERITIES.index(s) for s in severities]
    return SEVERITIES[min(ranked)] if ranked else None


@dataclass(frozen=True)
class Finding:
    """One piece of CUDA lock-in at one place in one file.

    `line` and `column` are 1-based (column counts characters, as editors and SARIF do).
    `kind` is what the per-target judgement reads (torch-cuda-api, nccl, triton, dtype:bfloat16,
    ...); `category` is what users read and group by.
    """

    path: str
    line: int
    column: int
    category: str
    severity: str
    rule: str
    kind: str
    api: str
    message: str
    portable: str
    code: str
    fixable: bool = False
    target_note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def judged(self, severity: str, note: str) -> Finding:
        return replace(self, severity=severity, target_note=note)


@dataclass(frozen=True)
class Skipped:
    """A file that was not analysed, and why (never fatal for the scan)."""

    path: str
    reason: str


@dataclass
class ScanResult:
    root: str
    files: int = 0
    python_files: int = 0
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    judged_against: list[str] = field(default_factory=list)
    blocking_by_target: dict[str, int] = field(default_factory=dict)

    def sort(self) -> None:
        self.findings.sort(key=lambda f: (f.path, f.line, f.column, f.rule))
        self.skipped.sort(key=lambda s: s.path)

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def exit_code(self) -> int:
        """1 when anything blocks (a CI gate), else 0."""
        return 1 if any(f.severity == "blocks" for f in self.findings) else 0
