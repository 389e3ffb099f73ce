"""GPU library dispatch, checked and measured on an NVIDIA GPU host in one run (< 5 minutes on
16 cores): zoo models compiled for an nvidia-* profile with and without cuBLAS/cuDNN dispatch
through torch, each verified against ONNX Runtime, then timed at batch 1 and 32 against torch
eager and torch.compile, interleaved in the same run (compiler/bench.py's method and engines).

    python scripts/gpu_dispatch_check.py OUT.json [--models resnet50,bert] [--batches 1,32]
        [--target nvidia-h100] [--precision fp32] [--no-torch-compile] [--compile-only]
        [--repeat 20] [--workers 8]

Phase 1 compiles every (model, batch, dispatch) artifact in parallel worker processes
(spawned: no CUDA state is forked) while the main process builds and warms up the torch
engines (torch.compile's inductor compiles there, on the GPU). Phase 2, on the GPU, one
(model, batch) at a time: verify both artifacts against ONNX Runtime (CPU provider) on the
same seeded inputs, then time anychip with dispatch, anychip TVM-only, torch eager and
torch.compile, interleaved. Prints a markdown table and writes everything to OUT.json.
`--compile-only` runs phase 1 alone (what a machine without a GPU can check).
Exit code: 0 when every artifact verified (or compiled, with --compile-only), 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import functools
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path


@functools.lru_cache(maxsize=None)
def _inputs(model: str) -> tuple:
    from anychip.compiler.frontend import load_model

    return tuple((s.name, tuple(s.shape)) for s in load_model(f"zoo:{model}", None, {}).inputs)


def _shapes(model: str, batch: int) -> dict:
    """{input: shape} at `batch` (the model's own shape with the first dim replaced)."""
    return {name: (batch, *shape[1:]) for name, shape in _inputs(model)}


def _compile_one(job: dict) -> dict:
    """Worker: compile one artifact and save it; returns what the report needs."""
    import anychip

    started = time.perf_counter()
    try:
        art = anychip.compile(f"zoo:{job['model']}", target=job["target"],
                              precision=job["precision"], shapes=job["shapes"],
                              dispatch=job["dispatch"])
        saved = art.save(job["path"])
        report = art.report
        return {**job, "ok": True, "path": str(saved.path),
                "compile_s": round(time.perf_counter() - started, 1),
                "dispatch_report": report.get("dispatch"), "kernels": report.get("kernels"),
                "precision_used": art.precision,
                "device_code": (report.get("device_code") or {}).get("cubin_arch")}
    except Exception as exc:  # noqa: BLE001 - reported per artifact, the run goes on
        return {**job, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                "compile_s": round(time.perf_counter() - started, 1)}


def _torch_engines(model: str, batch: int, shapes: dict, feed: dict, with_compile: bool,
                   notes: dict, device: str) -> dict:
    """torch eager and torch.compile on `device` for one (model, batch), compiled and warmed."""
    from anychip.compiler import bench as b
    from anychip.compiler.frontend import load_model

    source = load_model(f"zoo:{model}", None, shapes)
    engines = {}
    kinds = [("torch", False)] + ([("torch.compile", True)] if with_compile else [])
    for name, compiled in kinds:
        started = time.perf_counter()
        run, why = b._torch_engine(f"zoo:{model}", source, os.cpu_count() or 1, device,
                                   compiled=compiled)
        if run is None:
            notes[name] = why
            continue
        try:
            run(feed)   # torch.compile compiles here
            engines[name] = run
            notes[name] = f"{why or name}; first call {time.perf_counter() - started:.1f} s"
        except Exception as exc:  # noqa: BLE001 - inductor/triton raise many types
            notes[name] = f"failed: {(str(exc).splitlines() or ['?'])[0][:200]}"
    return engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--models", default="resnet50,bert")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--target", default="nvidia-h100")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--no-torch-compile", action="store_true")
    p.add_argument("--compile-only", action="store_true")
    args = p.parse_args(argv)
    from anychip.compiler.registry import get_backend, get_profile

    profile = get_profile(args.target)
    backend = get_backend(profile)
    device = backend.bench_device(profile)   # 'cuda' for a GPU target (--target cpu: a dry run)
    if not args.compile_only:
        execution = backend.execution(profile)
        if not execution.can_run:
            print(f"'{args.target}' cannot run here: {execution.why}; --compile-only checks "
                  f"the compiles", file=sys.stderr)
            return 3
    t0 = time.perf_counter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="anychip-gpu-check-"))
    jobs = []
    for model in models:
        for batch in batches:
            shapes = _shapes(model, batch)
            for dispatch in (True, False):
                jobs.append({"model": model, "batch": batch, "dispatch": dispatch,
                             "target": args.target, "precision": args.precision,
                             "shapes": shapes, "path": str(
                                 workdir / f"{model}-b{batch}-{'lib' if dispatch else 'tvm'}")})
    ctx = multiprocessing.get_context("spawn")
    pool = futures.ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=ctx)
    pending = [pool.submit(_compile_one, job) for job in jobs]

    # meanwhile: torch engines (and inductor) on the GPU
    torch_side: dict = {}
    if not args.compile_only:
        from anychip.compiler.inputs import random_inputs
        from anychip.compiler.frontend import load_model

        for model in models:
            for batch in batches:
                shapes = _shapes(model, batch)
                feed = random_inputs(load_model(f"zoo:{model}", None, shapes).inputs, 0)
                notes: dict = {}
                engines = _torch_engines(model, batch, shapes, feed,
                                         not args.no_torch_compile, notes, device)
                torch_side[(model, batch)] = (feed, engines, notes)
    compiled = [f.result() for f in pending]
    pool.shutdown()
    phase1 = time.perf_counter() - t0
    print(f"phase 1 (compiles{'' if args.compile_only else ' + torch engines'}): "
          f"{phase1:.0f} s", flush=True)
    for c in compiled:
        state = (f"{c['compile_s']} s, kernels {c.get('kernels')}, dispatch "
                 f"{(c.get('dispatch_report') or {}).get('total', 0)} calls, kept in TVM "
                 f"{(c.get('dispatch_report') or {}).get('kept_in_tvm', {})}"
                 if c["ok"] else c["error"])
        print(f"  {c['model']} b{c['batch']} {'lib' if c['dispatch'] else 'tvm'}: {state}")
    results = {"target": args.target, "precision": args.precision, "compiles": compiled,
               "phase1_s": round(phase1, 1), "runs": []}
    failed = [c for c in compiled if not c["ok"]]
    if args.compile_only:
        _write(args.out, results)
        return 1 if failed else 0

    import anychip
    from anychip.compiler.bench import Latency, time_interleaved, _gpu_name
    from anychip.compiler.frontend import load_model
    from anychip.compiler.verify import verify_artifact

    results["gpu"] = _gpu_name() if device == "cuda" else "none (dry run on the host CPU)"
    import torch

    # torch eager runs with torch's defaults: cuDNN may use TF32 for fp32 convolutions
    results["torch"] = {"version": torch.__version__,
                        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                        "cublas_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    ok = not failed
    rows = []
    for model in models:
        for batch in batches:
            feed, engines, notes = torch_side[(model, batch)]
            source = load_model(f"zoo:{model}", None, _shapes(model, batch))
            timed = dict(engines)
            entry = {"model": model, "batch": batch, "verify": {}, "notes": notes}
            for c in compiled:
                if (c["model"], c["batch"]) != (model, batch) or not c["ok"]:
                    continue
                name = "anychip+lib" if c["dispatch"] else "anychip-tvm"
                try:
                    art = anychip.load(c["path"])
                    report = verify_artifact(art, source.original, source.label, inputs=feed)
                    entry["verify"][name] = {"passed": bool(report.passed),
                                             "summary": report.summary()[:400]}
                    ok = ok and bool(report.passed)
                    timed[name] = (lambda a: (lambda f: a.run(f)))(art)
                except Exception as exc:  # noqa: BLE001 - one line per failed engine
                    ok = False
                    entry["verify"][name] = {"passed": False,
                                             "summary": f"{type(exc).__name__}: {str(exc)[:300]}"}
            calls = {n: (lambda r: (lambda: r(feed)))(r) for n, r in timed.items()}
            samples = time_interleaved(calls, args.warmup, args.repeat, pause=0.01) \
                if calls else {}
            lat = {n: Latency.of(s).__dict__ for n, s in samples.items()}
            entry["latency_ms"] = lat
            best_torch = min((lat[n]["median"] for n in ("torch", "torch.compile") if n in lat),
                             default=None)
            entry["best_torch_ms"] = best_torch
            for n in ("anychip+lib", "anychip-tvm", "torch", "torch.compile"):
                if n not in lat:
                    rows.append((model, batch, n, "n/a", "",
                                 entry["verify"].get(n, {}).get("summary", notes.get(n, ""))))
                    continue
                ratio = f"{lat[n]['median'] / best_torch:.2f}x" if best_torch else ""
                verdict = ("verified" if entry["verify"].get(n, {}).get("passed") else
                           "NOT verified") if n.startswith("anychip") else ""
                rows.append((model, batch, n, f"{lat[n]['median']:.3f}", ratio, verdict))
            results["runs"].append(entry)
            print(f"  timed {model} b{batch} ({time.perf_counter() - t0:.0f} s)", flush=True)
    results["total_s"] = round(time.perf_counter() - t0, 1)
    print(f"\n{args.target} ({args.precision}) on {results['gpu']}, median of {args.repeat} "
          f"interleaved runs, numpy in and out for every engine; ratio = median / the better "
          f"of torch eager and torch.compile; torch {results['torch']}\n")
    print("| model | batch | engine | median ms | ratio | check |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print(f"\ntotal {results['total_s']} s")
    _write(args.out, results)
    return 0 if ok else 1


def _write(path: str, results: dict) -> None:
    Path(path).write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
