"""`anychip bench --profile`: where the time of one inference goes.

Why a profiler of our own: TVM 0.27's Relax VM has no built-in profiler, but it calls an
instrument before and after every Call instruction (`VirtualMachine.set_instrument`). Every
kernel TVM compiled, every library call the backend dispatched (oneDNN through torch...) and
every runtime builtin is one such call, so timing them there sees the whole run by name. What
the instrument cannot see (the VM's own dispatch, argument marshalling, Python) is reported as
host overhead: the run's time minus its calls'. Every figure comes from one instrumented run,
the median one by wall time: per-call medians taken over different runs did not add up to
the median run when stalls (an OpenMP wake-up on a busy VM: milliseconds) hit different
calls in different runs (0.15 ms of calls in a 3.9 ms median run).

Targets that do not execute here but whose backend estimates each kernel (a cost model's
`estimate.kernels` in report.json, as a simulating family writes it) get the same table from those
estimates, marked "estimated" everywhere: nothing in it was measured.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import AnychipError, NotExecutable

TOP = 15

# kinds, in the order the totals are printed
LIB_CONV, LIB_GEMM, LIB_OTHER = "library convolution", "library GEMM", "library other"
KERNEL, LAYOUT, RUNTIME, HOST = ("TVM compute kernel", "layout transform", "runtime builtin",
                                 "host overhead")
KINDS = (LIB_CONV, LIB_GEMM, LIB_OTHER, KERNEL, LAYOUT, RUNTIME, HOST)


@dataclass
class Entry:
    """One kernel or library call, aggregated over its calls in one run."""

    name: str
    kind: str
    what: str                 # what it computes (the op or the library root)
    calls: int
    total_ms: float           # per run
    share: float              # of the run's median time
    gflops: float | None = None
    gbs: float | None = None


@dataclass
class Profile:
    model: str
    target: str
    how: str                  # "executed" (measured) or "estimated (cost model)"
    run_ms: float
    entries: list[Entry]
    totals: dict[str, float]  # kind -> ms per run
    runs: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**asdict(self), "entries": [asdict(e) for e in self.entries]}


# -- classification --------------------------------------------------------------------------
def _kind(symbol: str) -> str:
    low = symbol.lower()
    if low.startswith("vm."):
        return RUNTIME
    if not _is_library(symbol):
        return LAYOUT if ("transpose" in low or "layout_transform" in low) else KERNEL
    root = low.rsplit(".", 1)[-1]
    if root.startswith("conv"):
        return LIB_CONV
    if root.startswith(("matmul", "linear", "dense", "gemm", "batch_matmul")):
        return LIB_GEMM
    return LIB_OTHER


def _shapes(values) -> list[tuple[tuple[int, ...], int]]:
    """(shape, itemsize) of the tensor arguments of a call."""
    import tvm

    out = []
    for v in values:
        if isinstance(v, tvm.runtime.Tensor):
            out.append((tuple(int(d) for d in v.shape), np.dtype(str(v.dtype)).itemsize))
    return out


def _entry_name(symbol: str, kind: str, tensors) -> str:
    """A kernel's entry is its name; a library call's is one per operand shapes (each is its
    own primitive): the data's shape, and for a convolution or GEMM the weight's too, so that
    two calls on the same input (a 1x1 and a 3x3 convolution, Q and the MLP's up projection)
    are not one entry counted at the first one's FLOPs."""
    if not kind.startswith("library") or not tensors:
        return symbol
    name = f"{symbol} {'x'.join(map(str, tensors[0][0]))}"
    if kind in (LIB_CONV, LIB_GEMM) and len(tensors) >= 3:
        name += " * " + "x".join(map(str, tensors[1][0]))
    return name


def _flops(kind: str, tensors: list[tuple[tuple[int, ...], int]]) -> float | None:
    """FLOPs of a library convolution or GEMM from its operands (data, weight, ..., out)."""
    if len(tensors) < 3:
        return None
    data, weight, out = tensors[0][0], tensors[1][0], tensors[-1][0]
    n_out = float(np.prod(out)) if out else 0.0
    if kind == LIB_GEMM and data:
        return 2.0 * n_out * data[-1]
    if kind == LIB_CONV and weight and out:
        cout = weight[0]
        per_out = float(np.prod(weight)) / cout if cout else 0.0
        return 2.0 * n_out * per_out
    return None


# -- measured (a target that executes here) --------------------------------------------------
def _is_library(symbol: str) -> bool:
    """A call into a registered global function (a dispatched library), not a kernel of the
    artifact's own library: TVM kernels are not globals."""
    import tvm

    return tvm.get_global_func(symbol, allow_missing=True) is not None


def _median_ms(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def measure(artifact, feed: dict, runs: int = 10, warmup: int = 3,
            label: str = "") -> tuple[Profile, list[dict]]:
    """Profile `artifact` on this machine: (profile, trace events of the last run)."""
    import tvm
    from tvm import relax

    from .dispatch import make_available
    from .inputs import order_inputs

    runtime = artifact.manifest.get("runtime", {})
    device = str(runtime.get("device", "cpu"))
    # TVM's estimate of its own kernels' FLOPs, recorded at build (backends/host/schedule.py)
    kernel_flops = artifact.report.get("kernel_flops") or {}
    make_available(list(runtime.get("libraries", [])), int(runtime.get("num_threads") or 0)
                   or None)
    dev = tvm.device(device, 0)
    lib = tvm.runtime.load_module(str(artifact.library_path))
    vm = relax.VirtualMachine(lib, dev)
    arrays = order_inputs(artifact.inputs, feed, label or "profile")
    args = [tvm.runtime.tensor(np.asarray(a, order="C"), dev) for a in arrays]

    def run_once():
        vm["main"](*args)
        dev.sync()

    for _ in range(warmup):
        run_once()
    run_ms = _median_ms(run_once, runs)

    per_run: list[dict[str, list[float]]] = []
    meta: dict[str, dict] = {}
    kinds: dict[str, str] = {}
    events: list[dict] = []
    state = {"t0": 0.0, "calls": defaultdict(list), "start": 0.0, "trace": []}

    def instrument(func, symbol, before, ret, *call_args):
        now = time.perf_counter()
        if before:
            state["t0"] = now
            return 0
        dev.sync()
        end = time.perf_counter()
        symbol = str(symbol)
        kind = kinds.get(symbol) or kinds.setdefault(symbol, _kind(symbol))
        tensors = _shapes(list(call_args) + ([ret] if ret is not None else []))
        name = _entry_name(symbol, kind, tensors)
        state["calls"][name].append((end - state["t0"]) * 1e3)
        state["trace"].append((name, state["t0"] - state["start"], end - state["t0"]))
        if name not in meta:
            meta[name] = {"kind": kind, "flops": _flops(kind, tensors) or kernel_flops.get(symbol),
                          "bytes": float(sum(np.prod(s) * b for s, b in tensors))}
        return 0

    vm.set_instrument(instrument)
    walls, traces = [], []
    for _ in range(runs):
        state["calls"] = defaultdict(list)
        state["trace"] = []
        state["start"] = time.perf_counter()
        run_once()
        walls.append((time.perf_counter() - state["start"]) * 1e3)
        per_run.append(dict(state["calls"]))
        traces.append(state["trace"])
    # the median run by wall time, whole: its calls, its host overhead, its trace
    median = sorted(range(runs), key=walls.__getitem__)[runs // 2]
    plain_ms, run_ms, chosen = run_ms, walls[median], per_run[median]
    host_ms = run_ms - sum(sum(v) for v in chosen.values())
    for name, start, dur in traces[median]:
        events.append({"name": name, "cat": meta[name]["kind"], "ph": "X", "pid": 0, "tid": 0,
                       "ts": round(start * 1e6, 3), "dur": round(dur * 1e6, 3)})

    totals_ms = {n: sum(chosen.get(n, [0.0])) for n in meta}
    calls = {n: len(chosen.get(n, [])) for n in meta}
    entries = []
    for name, ms in totals_ms.items():
        info = meta[name]
        seconds = ms / 1e3
        entries.append(Entry(
            name=name, kind=info["kind"], what=_what(name), calls=calls[name],
            total_ms=ms, share=ms / run_ms if run_ms else 0.0,
            gflops=(info["flops"] * calls[name] / seconds / 1e9
                    if info["flops"] and seconds > 0 else None),
            gbs=(info["bytes"] * calls[name] / seconds / 1e9
                 if info["bytes"] and seconds > 0 else None)))
    entries.sort(key=lambda e: e.total_ms, reverse=True)
    totals = defaultdict(float)
    for e in entries:
        totals[e.kind] += e.total_ms
    totals[HOST] = max(0.0, host_ms)
    profile = Profile(model=label, target=str(artifact.manifest.get("target", "")),
                      how="executed", run_ms=run_ms, entries=entries,
                      totals={k: totals.get(k, 0.0) for k in KINDS}, runs=runs,
                      notes=[(f"each VM call timed by an instrument (device synchronised); "
                              f"per run: the median of {runs} instrumented runs, "
                              f"{plain_ms:.3f} ms without the instrument; host overhead = run "
                              f"- its calls")])
    return profile, events


def _what(symbol: str) -> str:
    """A short description of what a call computes, from its name."""
    base = symbol.rsplit(".", 1)[-1]
    for prefix in ("fused_", "vm_builtin_"):
        base = base.removeprefix(prefix)
    return base.replace("_", " ")[:48]


# -- estimated (a backend's cost model) ------------------------------------------------------
def estimate(report: dict, target: str, label: str = "") -> tuple[Profile, list[dict]]:
    """The same table from a backend's per-kernel estimate (report.json `estimate.kernels`)."""
    est = report.get("estimate") or {}
    kernels = est.get("kernels") or []
    if not kernels:
        raise NotExecutable(f"target '{target}': its backend gives no per-kernel estimate and "
                            f"it does not execute here, so there is nothing to profile.")
    agg: dict[str, dict] = {}
    events, clock = [], 0.0
    for k in kernels:
        name = str(k.get("node") or k.get("name") or k.get("op"))
        unit = str(k.get("unit", ""))
        op = str(k.get("op", ""))
        kind = f"{unit} unit" if unit else "kernel"
        t_us = float(k.get("time_us") or 0.0)
        a = agg.setdefault(name, {"kind": kind, "what": f"{op} on {unit}".strip(), "calls": 0,
                                  "us": 0.0, "flops": 0.0, "bytes": 0.0})
        a["calls"] += 1
        a["us"] += t_us
        a["flops"] += float(k.get("flops") or 0.0)
        a["bytes"] += float((k.get("bytes") or {}).get("GM", 0.0))
        events.append({"name": name, "cat": kind, "ph": "X", "pid": 0, "tid": 0,
                       "ts": round(clock, 3), "dur": round(t_us, 3)})
        clock += t_us
    run_ms = float((est.get("total") or {}).get("time_us") or clock) / 1e3
    entries = []
    for name, a in agg.items():
        s = a["us"] / 1e6
        entries.append(Entry(name=name, kind=a["kind"], what=a["what"], calls=a["calls"],
                             total_ms=a["us"] / 1e3,
                             share=(a["us"] / 1e3) / run_ms if run_ms else 0.0,
                             gflops=a["flops"] / s / 1e9 if a["flops"] and s > 0 else None,
                             gbs=a["bytes"] / s / 1e9 if a["bytes"] and s > 0 else None))
    entries.sort(key=lambda e: e.total_ms, reverse=True)
    totals = defaultdict(float)
    for e in entries:
        totals[e.kind] += e.total_ms
    return Profile(model=label, target=target, how="estimated (cost model)", run_ms=run_ms,
                   entries=entries, totals=dict(totals),
                   notes=[("estimated by the backend's cost model, not measured: no device "
                           "of this kind ran")]), events


# -- entry point and output ------------------------------------------------------------------
def profile_model(model, target: str = "cpu", shapes: dict | None = None,
                  precision: str | None = None, runs: int = 10, seed: int = 0,
                  at: dict[str, int] | None = None, **options) -> tuple[Profile, list[dict]]:
    """Compile `model` for `target` and profile it (measured where it executes, else from the
    backend's estimate). A symbolic model (`dims=`, `gears=` in options) runs at one shape:
    each symbol at `at[name]`, else its lower bound; the label says which."""
    from .driver import compile_model
    from .inputs import random_inputs
    from .registry import get_backend, get_profile

    if runs < 1:
        raise AnychipError("--runs must be at least 1.")
    profile = get_profile(target)
    execution = get_backend(profile).execution(profile)
    artifact = compile_model(model, target=target, precision=precision, shapes=shapes,
                             **options)
    label = model if isinstance(model, str) else type(model).__name__
    sizes = artifact.sizes_for(at)
    if sizes:
        label += " at " + ", ".join(f"{k}={v}" for k, v in sizes.items())
    if execution.mode.value == "executes":
        return measure(artifact, random_inputs(artifact.inputs, seed, sizes), runs=runs,
                       label=label)
    report = json.loads((Path(artifact.path) / "report.json").read_text())
    return estimate(report, target, label)


def format_profile(p: Profile, top: int = TOP) -> str:
    head = (f"{p.model} on {p.target} ({p.how}): {p.run_ms:.3f} ms per run"
            + (f", {p.runs} profiled runs" if p.runs else ""))
    columns = (f"{'kernel / call':<44} {'kind':<20} {'calls':>5} {'ms':>9} {'share':>6} "
               f"{'GFLOP/s':>8} {'GB/s':>7}")
    rows = [head, "", columns]
    for e in p.entries[:top]:
        rows.append(f"{e.name[:44]:<44} {e.kind:<20} {e.calls:>5} {e.total_ms:>9.3f} "
                    f"{100 * e.share:>5.1f}% "
                    f"{(f'{e.gflops:.1f}' if e.gflops else '-'):>8} "
                    f"{(f'{e.gbs:.1f}' if e.gbs else '-'):>7}")
    if len(p.entries) > top:
        rest = sum(e.total_ms for e in p.entries[top:])
        rows.append(f"... {len(p.entries) - top} more: {rest:.3f} ms")
    rows += ["", "totals per kind:"]
    for kind, ms in p.totals.items():
        if ms > 0:
            rows.append(f"  {kind:<22} {ms:>9.3f} ms  {100 * ms / p.run_ms if p.run_ms else 0:5.1f}%")
    rows += [f"note: {n}" for n in p.notes]
    return "\n".join(rows)


def write_trace(events: list[dict], path: str | Path, force: bool = False) -> Path:
    """A Chrome/Perfetto trace (JSON Trace Event Format) of one run, written atomically."""
    from .atomic import write_file

    data = json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}).encode()
    return write_file(path, lambda tmp: tmp.write_bytes(data), force=force)
