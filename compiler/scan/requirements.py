"""CUDA-only dependencies: requirements files, pyproject.toml, setup.py's install_requires.

These files are not Python, so they are read as what they are: one requirement per line
(requirements*.txt / *.in) or TOML (pyproject). A requirement's name is normalised as PEP 503
does (lower case, runs of -_. become -) before it is looked up, so `Flash_Attn` is flash-attn.
"""

from __future__ import annotations

import re

from .findings import Finding
from .rules import REQUIREMENT_PREFIXES, REQUIREMENT_SUFFIXES, REQUIREMENTS, Rule

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_CUDA_WHEEL = re.compile(r"(\+cu\d+|/whl/cu\d+|/nightly/cu\d+)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_rule(spec: str) -> tuple[str, Rule] | None:
    """The rule for one requirement string ('flash-attn>=2; sys_platform=="linux"'), if any."""
    spec = spec.strip()
    if _CUDA_WHEEL.search(spec):
        return spec, Rule("req-cuda-wheel", "requirement", "port", "torch-cuda-api",
                          "the vendor's PyTorch build (e.g. torch plus torch_npu on Ascend) "
                          "instead of a CUDA wheel")
    match = _NAME.match(spec)
    if not match:
        return None
    name = normalise(match.group(1))
    if name in REQUIREMENTS:
        return name, REQUIREMENTS[name]
    for prefix, portable in REQUIREMENT_PREFIXES.items():
        if name.startswith(prefix):
            return name, Rule(f"req-{prefix.rstrip('-')}", "requirement", "blocks",
                              "cuda-library", portable)
    if name.endswith(REQUIREMENT_SUFFIXES):
        return name, Rule("req-cuda-build", "requirement", "blocks", "cuda-library",
                          "the package's non-CUDA build, or the vendor's build of it")
    return None


def _finding(path: str, line: int, column: int, code: str, found) -> Finding:
    name, rule = found
    return Finding(path=path, line=line, column=column, category=rule.category,
                   severity=rule.severity, rule=rule.rule, kind=rule.kind, api=name,
                   message=f"depends on {name}, built for NVIDIA GPUs only"
                   if rule.severity == "blocks" else f"depends on {name}",
                   portable=rule.portable, code=code.strip()[:200])


def scan_requirements_text(path: str, text: str) -> list[Finding]:
    findings = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-") and not _CUDA_WHEEL.search(line):
            continue  # options: only index URLs matter (CUDA wheel indexes)
        found = requirement_rule(line)
        if found:
            findings.append(_finding(path, number, raw.index(line[0]) + 1, raw, found))
    return findings


def scan_pyproject(path: str, text: str) -> list[Finding]:
    """Dependencies in [project], optional-dependencies and [build-system] requires."""
    import tomllib

    data = tomllib.loads(text)  # TOMLDecodeError is the caller's "does not parse"
    specs: list[str] = []
    project = data.get("project", {})
    specs += project.get("dependencies", [])
    for group in project.get("optional-dependencies", {}).values():
        specs += group
    specs += data.get("build-system", {}).get("requires", [])
    lines = text.splitlines()
    findings = []
    for spec in specs:
        if not isinstance(spec, str):
            continue
        found = requirement_rule(spec)
        if not found:
            continue
        number, column = _locate(lines, spec)
        findings.append(_finding(path, number, column, lines[number - 1] if lines else spec,
                                 found))
    return findings


def _locate(lines: list[str], spec: str) -> tuple[int, int]:
    for number, line in enumerate(lines, start=1):
        for quote in ('"', "'"):
            at = line.find(quote + spec + quote)
            if at >= 0:
                return number, at + 2
    return 1, 1
