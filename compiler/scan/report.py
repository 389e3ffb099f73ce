"""The scan as text (grouped by file and category, with counts), JSON and Markdown."""

from __future__ import annotations

from collections import Counter
from itertools import groupby

from .findings import SEVERITIES, ScanResult


def _scope(result: ScanResult) -> str:
    if result.judged_against:
        return "judged against " + ", ".join(result.judged_against)
    return "judged for any non-NVIDIA accelerator (use --target T for one chip)"


def summary_lines(result: ScanResult) -> list[str]:
    counts = result.counts()
    lines = [f"{result.files} files scanned ({result.python_files} Python), "
             f"{len(result.skipped)} skipped; {len(result.findings)} findings: "
             + ", ".join(f"{counts[s]} {s}" for s in SEVERITIES)]
    for name, n in result.blocking_by_target.items():
        lines.append(f"{n} finding(s) block {name}")
    by_cat = Counter((f.category, f.severity) for f in result.findings)
    if by_cat:
        cats = sorted({c for c, _ in by_cat})
        lines.append("by category: " + "; ".join(
            f"{c} " + "/".join(f"{by_cat[(c, s)]} {s}" for s in SEVERITIES if by_cat[(c, s)])
            for c in cats))
    return lines


def render_text(result: ScanResult) -> str:
    out = [f"anychip scan {result.root}: {_scope(result)}", ""]
    for path, items in groupby(result.findings, key=lambda f: f.path):
        items = list(items)
        counts = Counter(f.severity for f in items)
        out.append(f"{path}  ({len(items)}: "
                   + ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts[s]) + ")")
        for category in sorted({f.category for f in items}):
            in_cat = [f for f in items if f.category == category]
            out.append(f"  {category} ({len(in_cat)})")
            for f in in_cat:
                out.append(f"    {f.path}:{f.line}:{f.column}  {f.severity:<6}  {f.code}")
                out.append(f"      {f.message}; portable: {f.portable}"
                           + (" [--fix]" if f.fixable else ""))
                if f.target_note:
                    out.append(f"      {f.target_note}")
        out.append("")
    if result.skipped:
        out.append(f"Skipped ({len(result.skipped)}):")
        out += [f"  {s.path}: {s.reason}" for s in result.skipped]
        out.append("")
    out += summary_lines(result)
    return "\n".join(out)


def as_json(result: ScanResult) -> dict:
    return {
        "root": result.root,
        "judged_against": result.judged_against,
        "files": result.files,
        "python_files": result.python_files,
        "summary": {**result.counts(), "total": len(result.findings),
                    "blocking_by_target": result.blocking_by_target,
                    "by_category": dict(Counter(f.category for f in result.findings))},
        "findings": [f.as_dict() for f in result.findings],
        "skipped": [{"path": s.path, "reason": s.reason} for s in result.skipped],
        "exit_code": result.exit_code(),
    }


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(result: ScanResult) -> str:
    out = [f"# CUDA lock-in: `{result.root}`", "", f"Scope: {_scope(result)}.", ""]
    out += [f"- {line}" for line in summary_lines(result)]
    for path, items in groupby(result.findings, key=lambda f: f.path):
        items = list(items)
        out += ["", f"## `{path}` ({len(items)})", "",
                "| line:col | severity | category | code | portable form |",
                "|---|---|---|---|---|"]
        for f in sorted(items, key=lambda f: (f.category, f.line, f.column)):
            portable = f.portable + (f" ({f.target_note})" if f.target_note else "")
            out.append(f"| {f.line}:{f.column} | {f.severity} | {f.category} | "
                       f"`{_md(f.code)}` | {_md(portable)} |")
    if result.skipped:
        out += ["", "## Skipped", ""] + [f"- `{s.path}`: {_md(s.reason)}" for s in result.skipped]
    return "\n".join(out) + "\n"
