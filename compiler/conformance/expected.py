"""Expected failures as data: backends/conformance/<target>.yaml, one per target.

Each file maps a case name to "status: reason" for every case the target is expected not
to pass (IREE's per-backend expected-failure lists, docs/security.md). A run is checked
against it both ways: a case that does not pass and is not listed is a new failure, a listed
case that passes is an unexpected pass; either fails the run, so the list stays true.
`--update-expected` rewrites the entries of the cases that ran and keeps the others.
For a compiles-only target, "passing" means compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import AnychipError
from .engines import COMPILED, PASSED, Result

GOOD = {PASSED, COMPILED}


def expected_dir() -> Path:
    """backends/conformance/ inside the installed anychip.backends package."""
    import anychip.backends

    return Path(anychip.backends.__file__).resolve().parent / "conformance"


def expected_path(target: str, directory: Path | None = None) -> Path:
    return (directory or expected_dir()) / f"{target}.yaml"


def load_expected(target: str, directory: Path | None = None) -> dict[str, str]:
    """{case name: "status: reason"}; empty when the target has no file yet."""
    path = expected_path(target, directory)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AnychipError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); regenerate it "
                           f"with 'anychip conformance --target {target} --update-expected'.") \
            from exc
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, dict):
        raise AnychipError(f"{path}: expected a mapping 'cases: {{name: \"status: reason\"}}'; "
                           f"regenerate it with --update-expected.")
    return {str(k): str(v) for k, v in cases.items()}


@dataclass
class ExpectationCheck:
    """How a run compares with the target's expected-failure list."""

    listed: int = 0
    new_failures: list[Result] = field(default_factory=list)
    unexpected_passes: list[Result] = field(default_factory=list)
    expected_failures: list[Result] = field(default_factory=list)
    file: str = ""

    @property
    def ok(self) -> bool:
        return not self.new_failures and not self.unexpected_passes

    def as_dict(self) -> dict:
        return {"file": self.file, "listed": self.listed, "ok": self.ok,
                "expected_failures": len(self.expected_failures),
                "new_failures": [r.name for r in self.new_failures],
                "unexpected_passes": [r.name for r in self.unexpected_passes]}


def check(results: list[Result], expected: dict[str, str], file: str = "") -> ExpectationCheck:
    out = ExpectationCheck(listed=len(expected), file=file)
    for r in results:
        listed = r.name in expected
        if r.status in GOOD and listed:
            out.unexpected_passes.append(r)
        elif r.status not in GOOD and not listed:
            out.new_failures.append(r)
        elif r.status not in GOOD:
            out.expected_failures.append(r)
    return out


def update_expected(target: str, results: list[Result], onnx_version: str,
                    directory: Path | None = None) -> Path:
    """Rewrite the list: entries of the cases that ran follow this run, others are kept."""
    from ..atomic import write_file

    path = expected_path(target, directory)
    cases = load_expected(target, directory)
    for r in results:
        if r.status in GOOD:
            cases.pop(r.name, None)
        else:
            cases[r.name] = f"{r.status}: {r.reason}" if r.reason else r.status
    header = (f"# Conformance cases expected not to pass on '{target}' (ONNX {onnx_version} node "
              f"suite), each with its status and reason.\n# A run fails on a case missing here "
              f"that does not pass, and on a case listed here that passes.\n# Regenerate: "
              f"anychip conformance --target {_regenerate_flags(target)} --update-expected\n")
    body = yaml.safe_dump({"target": target, "onnx": onnx_version,
                           "cases": dict(sorted(cases.items()))},
                          sort_keys=False, allow_unicode=True, width=1000)

    def write(tmp: Path) -> None:
        tmp.write_text(header + body)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, write, force=True)
    return path


def _regenerate_flags(list_name: str) -> str:
    """'cpu@symbolic' -> 'cpu --symbolic'; 'ascend-910b@mode' -> '... --precision-mode mode'."""
    base, _, mode = list_name.partition("@")
    if not mode:
        return base
    return f"{base} --symbolic" if mode == "symbolic" else f"{base} --precision-mode {mode}"
