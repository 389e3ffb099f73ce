"""Regenerate README.md's conformance, model-matrix and benchmark tables: one command, run from
the repo root.

    python examples/update_readme_tables.py [--conformance-targets cpu,ascend-910b] [--models zoo:all]
        [--matrix-targets cpu,ascend-910b,ascend-910,ascend-310p] [--jobs 2]
        [--bench-target cpu] [--bench-against ort,torch] [--only bench]

It runs `anychip conformance ... --against ort --json`, `anychip matrix ... --markdown` and
`anychip bench MODEL --against ort,torch --json` for each model exactly as a user would, then
replaces the text between the `<!-- NAME:begin -->` / `<!-- NAME:end -->` markers (NAME:
conformance, matrix, bench, bench-batch: the throughput table at `--batch`). The README is written to a temporary file and renamed, so an
interrupted run leaves it as it was. Expect about an hour on a 2-core machine for the
conformance suite (~1,900 cases per target) and about 12 minutes for the benchmarks; the
benchmark table states the CPU, the date and the load average around every model's run,
because a ratio measured beside another job is not the machine's.
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


def _bench_models(models: str) -> list[str]:
    if models != "zoo:all":
        return models.split(",")
    from anychip.models import names

    return [f"zoo:{n}" for n in names()]


def bench_table(models: str, target: str, against: str, saved: str | None = None,
                batch: int | None = None) -> str:
    """One row per model: anychip's median and its ratio to each engine, from one interleaved
    `bench` run per model (ratios < 1: anychip is faster); `batch`: `bench --batch` (fewer
    runs: each is `batch` inferences)."""
    runs = ("--batch", str(batch), "--warmup", "2", "--repeat", "7") if batch else ()
    if saved:                              # a JSON list of earlier `bench --json` outputs
        results = json.loads(Path(saved).read_text())
    else:
        results = []
        for model in _bench_models(models):
            proc = _anychip("bench", model, "--target", target, "--against", against, "--json",
                            *runs)
            if proc.returncode != 0:
                line = (proc.stderr.strip().splitlines() or ["?"])[-1]
                results.append({"model": model, "error": line[:200]})
                continue
            results.append(json.loads(proc.stdout))
    engines = against.split(",")
    head = ["model", f"anychip ms ({target})"]
    for e in engines:
        head += [f"{e} ms", f"anychip/{e}"]
    head += ["after idle: anychip / " + " / ".join(engines)]
    rows = ["| " + " | ".join(head + ["load before/after"]) + " |",
            "|" + "---|" * (len(head) + 1)]
    cpus = set()
    for r in results:
        if "error" in r:
            rows.append(f"| {r['model']} | failed: {r['error']} |" + " |" * (len(head) - 1))
            continue
        cells = [r["model"], f"{r['latency_ms']['median']:.2f}"]
        for e in engines:
            lat, ratio = (r.get("engines") or {}).get(e), (r.get("ratio") or {}).get(e)
            cells += ([f"{lat['median']:.2f}", f"**{ratio:.2f}x**" if ratio <= 1.0 else
                       f"{ratio:.2f}x"] if lat and ratio is not None else ["n/a", ""])
        idle = r.get("after_idle_ms") or {}
        cells.append(" / ".join(f"{idle[n]:.2f}" if n in idle else "n/a"
                                for n in ["anychip", *engines]))
        machine = r.get("machine") or {}
        before, after = machine.get("load_avg_before"), machine.get("load_avg_after")
        cells.append(f"{before[0]} / {after[0]}" if before and after else "?")
        cpus.add(f"{machine.get('cpu', '?')}, {machine.get('cores_usable', '?')} cores")
        rows.append("| " + " | ".join(cells) + " |")
    first = next((r for r in results if "error" not in r), {})
    return "\n".join(rows) + (
        f"\n\nMedian of {first.get('repeat', '?')} steady-state runs per engine (interleaved "
        f"blocks of back-to-back calls; ratios from these) after "
        f"{first.get('warmup', '?')} warm-up runs; 'after idle': median of each block's "
        f"first call, after a 50 ms pause; batch {batch or 1}, "
        f"{first.get('threads', '?')} threads "
        f"for every engine; `{target}` executed; ONNX Runtime's CPU provider, torch eager. "
        f"Machine: {'; '.join(sorted(cpus)) or '?'}. {_stamp()}")


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
    ap.add_argument("--bench-target", default="cpu")
    ap.add_argument("--bench-against", default="ort,torch")
    ap.add_argument("--batch", type=int, default=8,
                    help="the throughput table's batch (`bench --batch`)")
    ap.add_argument("--batch-models",
                    default="zoo:resnet50,zoo:bert,zoo:vit,zoo:mobilenet_v3,zoo:efficientnet",
                    help="models of the throughput table")
    ap.add_argument("--skip-conformance", action="store_true")
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--only", choices=("conformance", "matrix", "bench"),
                    help="regenerate this table only")
    ap.add_argument("--bench-json", metavar="FILE",
                    help="use this saved JSON list of `anychip bench --json` outputs")
    ap.add_argument("--conformance-json", metavar="FILE",
                    help="use this saved `anychip conformance --json` output instead of running")
    ap.add_argument("--matrix-json", metavar="FILE",
                    help="use this saved `anychip matrix --json` output instead of running")
    args = ap.parse_args()
    if args.only:
        args.skip_conformance = args.only != "conformance"
        args.skip_matrix = args.only != "matrix"
        args.skip_bench = args.only != "bench"
    text = README.read_text()
    if not args.skip_bench:   # first: the longer runs after it would not change its figures
        text = replace_region(text, "bench", bench_table(args.models, args.bench_target,
                                                         args.bench_against, args.bench_json))
        text = replace_region(text, "bench-batch", bench_table(
            args.batch_models, args.bench_target, args.bench_against, batch=args.batch))
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
