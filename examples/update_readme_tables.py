"""Regenerate README.md's conformance table and model matrix: one command, run from the repo root.

    python examples/update_readme_tables.py [--conformance-targets cpu,ascend-910b] [--models zoo:all]
        [--matrix-targets cpu,ascend-910b,ascend-910,ascend-310p] [--jobs 2]

It runs `anychip conformance ... --against ort --json` and `anychip matrix ... --markdown`
exactly as a user would, then replaces the text between the `<!-- conformance:begin -->` /
`<!-- conformance:end -->` and `<!-- matrix:begin -->` / `<!-- matrix:end -->` markers. The
README is written to a temporary file and renamed, so an interrupted run leaves it as it was.
Expect about an hour on a 2-core machine (the suite is ~1,900 cases per target).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _anychip(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "anychip.compiler.cli.main", *args]
    print("$ anychip " + " ".join(args), file=sys.stderr, flush=True)
    return subprocess.run(cmd, capture_output=True, text=True)


def conformance_table(targets: str, jobs: int, saved: str | None = None) -> str:
    if saved:                              # the --json output of an earlier run
        reports = json.loads(Path(saved).read_text())
    else:
        proc = _anychip("conformance", "--target", targets, "--against", "ort", "--json",
                        "--jobs", str(jobs))
        if proc.returncode not in (0, 1):  # 1: the run differs from an expected-failure list
            raise SystemExit(f"anychip conformance failed: {proc.stderr.strip()[-500:]}")
        reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    rows = ["| target | how it ran | cases | passed | failed | unsupported | pass rate |",
            "|---|---|---|---|---|---|---|"]
    for r in reports:
        how = r["how"] + (f", {r['precision_mode']}" if r.get("precision_mode") else "")
        rows.append(f"| {r['target']} | {how} | {r['total']} | {r['passed']} | "
                    f"{r['failed']} | {r['unsupported']} | {100 * r['pass_rate']:.1f}% |")
    onnx_version = reports[0].get("onnx", "?")
    return "\n".join(rows) + (f"\n\nONNX {onnx_version} node test cases, each with its own "
                              f"rtol/atol; `ort` is ONNX Runtime's CPU provider on the same "
                              f"harness (the anchor). {_stamp()}")


def matrix_table(models: str, targets: str, saved: str | None = None) -> str:
    if saved:                              # the --json output of an earlier run
        from anychip.compiler.conformance.matrix import Cell, markdown

        cells = [Cell(**c) for c in json.loads(Path(saved).read_text())]
        order = lambda key: list(dict.fromkeys(getattr(c, key) for c in cells))  # noqa: E731
        return markdown(cells, order("model"), order("target")).strip() + f"\n\n{_stamp()}"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "matrix.md"
        proc = _anychip("matrix", *models.split(","), "--targets", targets, "--markdown",
                        str(out))
        if not out.exists():
            raise SystemExit(f"anychip matrix failed: {proc.stderr.strip()[-500:]}")
        return out.read_text().strip() + f"\n\n{_stamp()}"


def _stamp() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Generated {now} by `python examples/update_readme_tables.py` on "
            f"{platform.machine()} with {len(os.sched_getaffinity(0))} usable cores.")


def replace_region(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{README}: markers <!-- {name}:begin --> / <!-- {name}:end --> "
                         f"are missing; add them where the table belongs.")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conformance-targets", default="cpu,ascend-910b")
    ap.add_argument("--matrix-targets", default="cpu,ascend-910b,ascend-910,ascend-310p")
    ap.add_argument("--models", default="zoo:all")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-conformance", action="store_true")
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--conformance-json", metavar="FILE",
                    help="use this saved `anychip conformance --json` output instead of running")
    ap.add_argument("--matrix-json", metavar="FILE",
                    help="use this saved `anychip matrix --json` output instead of running")
    args = ap.parse_args()
    text = README.read_text()
    if not args.skip_conformance:
        text = replace_region(text, "conformance",
                              conformance_table(args.conformance_targets, args.jobs,
                                                args.conformance_json))
    if not args.skip_matrix:
        text = replace_region(text, "matrix", matrix_table(args.models, args.matrix_targets,
                                                               args.matrix_json))
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, README)
    print(f"updated {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
