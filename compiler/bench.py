"""Benchmark one model on one target against ONNX Runtime and torch eager, in the same run.

Method: every engine gets the same seeded inputs and the same thread count, `warmup` runs
each, then rounds in which every engine, in an order rotating each round (interleaved, so a
noisy neighbour slows all engines alike), runs a block: a pause (PAUSE_S: the previous engine's spinning
worker threads go idle instead of taking a core), one call timed as the engine's latency
*after idle*, then BLOCK calls back to back, timed as
its *steady-state* latency, until `repeat` steady samples per engine. Latency is wall-clock per
call, numpy in and numpy out for every engine; the report gives median, min and max of the
steady samples, the median after idle, and each ratio is anychip's steady median over that
engine's steady median from this same run.

Why blocks (docs/performance.md, 2026-12-04): with a pause before every timed call, each
sample was a wake-up, and on this VM kind (idle vCPUs look preempted to the guest scheduler, so
a woken OpenMP worker queues behind the thread that woke it, which spins in libgomp's barrier)
a libgomp wake costs up to ~10 ms: zoo:squeezenet 17.4 ms a call that way and 6.4 ms back to
back, while ONNX Runtime's pool, whose calling thread takes queued work itself, paid 0.4 ms.
Steady state is what a loop of inferences sees; the after-idle median is what a sporadic
request sees, and both are reported.

Throughput: FLOPs of Conv, ConvTranspose, MatMul and Gemm counted on the ONNX graph with its
inferred shapes, divided by the median latency, and compared with the machine's peak, which is
measured once with a large GEMM (torch.mm, same thread count) and cached per CPU.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .dispatch import choose_openmp_wait_policy, run_threads, usable_cores
from .errors import AnychipError, NotExecutable
from .frontend import _is_torch_module

ENGINES = ("ort", "torch")
# engines `against` may also name; not in the default set (torch.compile compiles for minutes)
MORE_ENGINES = ("torch.compile",)


@dataclass
class Latency:
    median: float
    min: float
    max: float
    samples: int

    @staticmethod
    def of(seconds: list[float]) -> "Latency":
        ms = [s * 1e3 for s in seconds]
        return Latency(statistics.median(ms), min(ms), max(ms), len(ms))


@dataclass
class BenchResult:
    model: str
    target: str
    how: str                                  # executed / simulated
    threads: int
    warmup: int
    repeat: int
    latency_ms: dict[str, float]              # anychip: median, min, max
    engines: dict[str, dict | None]           # other engines' latency_ms, None when n/a
    ratio: dict[str, float | None]            # anychip median / engine median
    notes: dict[str, str] = field(default_factory=dict)   # why an engine is n/a
    gflop: float | None = None
    gflops: float | None = None               # achieved by anychip (median)
    peak_gflops: float | None = None
    peak_pct: float | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    date: str = ""
    sizes: dict[str, int] = field(default_factory=dict)   # symbolic dims: the shape timed
    batch: int | None = None                  # --batch: every input's leading dim
    # engine ("anychip" too) -> median ms of the first call after a PAUSE_S idle pause
    after_idle_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


# -- FLOPs ---------------------------------------------------------------------------------

def count_flops(model) -> float:
    """FLOPs (multiply and add counted apart) of Conv/ConvTranspose/MatMul/Gemm in an ONNX
    model whose shapes are inferred (the frontend runs shape inference)."""
    from onnx import helper

    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0.0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ins = [shapes.get(name) for name in node.input]
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type in ("Conv", "ConvTranspose") and ins[1] and out:
            w = ins[1]
            per_output = w[1] * int(np.prod(w[2:]))    # Cin/groups * kernel
            if node.op_type == "Conv":
                total += 2.0 * int(np.prod(out)) * per_output
            else:
                total += 2.0 * int(np.prod(ins[0])) * w[1] * int(np.prod(w[2:]))
        elif node.op_type == "MatMul" and ins[0] and ins[1] and out:
            k = ins[0][-1]
            total += 2.0 * int(np.prod(out)) * k
        elif node.op_type == "Gemm" and ins[0] and out:
            k = ins[0][0] if attrs.get("transA", 0) else ins[0][1]
            total += 2.0 * int(np.prod(out)) * k
    return total


# -- peak ----------------------------------------------------------------------------------

def measure_peak_gflops(threads: int, size: int = 2048, runs: int = 5,
                        device: str = "cpu") -> float:
    """Best fp32 GFLOP/s of a size^3 GEMM (torch.mm) on `threads` threads, or on the GPU
    (plain fp32: TF32 off, so the peak matches the precision the bench compares)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            size = max(size, 8192)
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(runs):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            torch.mm(a, b)
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2.0 * size**3 / best / 1e9


def peak_gflops(threads: int, measure: Callable[[int], float] | None = None,
                device: str = "cpu") -> float:
    """The machine's peak, measured once per CPU model, thread count and torch version and
    kept in the cache folder (when there is a usable one) with the load average it was
    measured at. On a shared machine the first measurement may be low: a later bench on a
    less loaded machine measures again and keeps the higher value."""
    import torch

    from .user_cache import user_cache_dir

    where = _cpu_name() if device == "cpu" else f"{device}:{_gpu_name()}"
    key = f"{where}|{threads}|torch{torch.__version__}"
    folder = user_cache_dir(create=True, warn=False)
    path = folder / "peak_gflops.json" if folder else None
    table: dict = {}
    if path is not None and path.is_file():
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
    table = table if isinstance(table, dict) else {}
    known = table.get(key) if isinstance(table.get(key), dict) else None
    load = (_load() or [0.0])[0]
    if known and isinstance(known.get("gflops"), (int, float)) and \
            load >= float(known.get("load", 0.0)) - 0.5:
        return float(known["gflops"])
    value = (measure(threads) if measure else measure_peak_gflops(threads, device=device))
    if known and isinstance(known.get("gflops"), (int, float)):
        value = max(value, float(known["gflops"]))
    table[key] = {"gflops": value, "load": load}
    if path is not None:
        try:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table, indent=1))
            os.replace(tmp, path)
        except OSError:
            pass   # a read-only cache only costs a re-measurement next time
    return value


def _cpu_name() -> str:
    try:
        import tvm

        return str(tvm.get_global_func("tvm.codegen.llvm.GetHostCPUName")())
    except Exception:
        return platform.processor() or platform.machine()


def _gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - only a label
        return "unknown GPU"


# -- engines -------------------------------------------------------------------------------

def _ort_engine(source, threads: int, device: str = "cpu") -> tuple[Callable[[dict], Any], str]:
    """ONNX Runtime on the target's kind of device: its CUDA provider for a CUDA target when
    onnxruntime-gpu is installed, else the CPU provider, and a note that says so."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    providers, note = ["CPUExecutionProvider"], ""
    if device == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            note = "CUDAExecutionProvider"
        else:
            note = ("CPUExecutionProvider: ONNX Runtime's CUDA provider is not installed "
                    "(onnxruntime-gpu), so this ratio is GPU against CPU")
    session = ort.InferenceSession(source.original.SerializeToString(), opts,
                                   providers=providers)
    return (lambda feed: session.run(None, feed)), note


def _torch_module(model_ref, source) -> tuple[Any | None, str]:
    """(eval-mode torch.nn.Module, '') for the model, or (None, why torch is n/a).

    Zoo torch models and modules passed directly are used as they are; an ONNX-only model
    goes through onnx2torch when it is installed."""
    if isinstance(model_ref, str) and model_ref.startswith("zoo:"):
        from anychip import models as zoo

        module = zoo.build(model_ref[4:]).torch_module
        if module is not None:
            return module.eval(), ""
    elif _is_torch_module(model_ref):
        return model_ref.eval(), ""
    try:
        import onnx2torch
    except ImportError:
        return None, "ONNX-only model, and onnx2torch is not installed"
    try:
        return onnx2torch.convert(source.original).eval(), ""
    except Exception as exc:  # onnx2torch raises many types for unsupported ops
        return None, f"onnx2torch could not convert the model: {str(exc)[:120]}"


def _torch_engine(model_ref, source, threads: int, device: str = "cpu",
                  compiled: bool = False) -> tuple[Callable | None, str]:
    """torch eager (or `compiled`: torch.compile, default mode, compiled at the first call)
    on the target's kind of device; numpy in and out like every engine (on a GPU that
    includes the copies to and from it, as anychip's own run does)."""
    import torch

    module, why = _torch_module(model_ref, source)
    if module is None:
        return None, why
    if device == "cuda":
        if not torch.cuda.is_available():
            return None, "torch has no CUDA device here (a CPU build of torch?)"
        module = module.to("cuda")
    if compiled:
        module = torch.compile(module)
    names = [s.name for s in source.inputs]

    def run(feed):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            out = module(*[torch.from_numpy(feed[n]).to(device) for n in names])
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.cpu().numpy() for o in outs]

    if compiled:
        return run, f"torch.compile (inductor){' on CUDA' if device == 'cuda' else ''}"
    return run, ("torch eager on CUDA" if device == "cuda" else "")


# -- the run -------------------------------------------------------------------------------

# Pause before each engine's block: worker threads the previous engine left spinning (ONNX
# Runtime's pool spins for ~40 ms after a run on 2 cores) go idle instead of taking a core from
# the next engine. Measured on 2 cores, ResNet-50 through anychip right after an ONNX Runtime
# run: 58-67 ms with a 10 ms pause (41-44 ms when it followed itself), 41-47 ms with 50 ms.
PAUSE_S = 0.05
# Steady-state calls timed back to back after each block's first (after-idle) call.
BLOCK = 3


@dataclass
class Timings:
    """Seconds per call of each engine: `steady` (back to back within a block) and
    `after_idle` (each block's first call, after PAUSE_S idle)."""

    steady: dict[str, list[float]]
    after_idle: dict[str, list[float]]


def time_rounds(engines: dict[str, Callable[[], Any]], warmup: int, repeat: int,
                pause: float = PAUSE_S, block: int = BLOCK) -> Timings:
    """`repeat` steady samples per engine, in rounds that interleave the engines (the order
    rotating each round); each round an engine gets a pause, one after-idle call, then
    `block` back-to-back calls."""
    names = list(engines)
    for name in names:
        for _ in range(warmup):
            engines[name]()
    block = max(1, block)
    steady: dict[str, list[float]] = {n: [] for n in names}
    after_idle: dict[str, list[float]] = {n: [] for n in names}
    for i in range(-(-repeat // block)):
        for name in names[i % len(names):] + names[:i % len(names)]:
            time.sleep(pause)
            for k in range(1 + min(block, repeat - len(steady[name]))):
                start = time.perf_counter()
                engines[name]()
                (after_idle if k == 0 else steady)[name].append(time.perf_counter() - start)
    return Timings(steady, after_idle)


def time_interleaved(engines: dict[str, Callable[[], Any]], warmup: int, repeat: int,
                     pause: float = PAUSE_S, block: int = BLOCK) -> dict[str, list[float]]:
    """The steady samples of `time_rounds` (seconds per call, per engine)."""
    return time_rounds(engines, warmup, repeat, pause, block).steady


def bench(model, target: str = "cpu", against: tuple[str, ...] = ENGINES, warmup: int = 5,
          repeat: int = 20, shapes: dict | None = None, precision: str | None = None,
          seed: int = 0, peak: bool = True, dims: dict | None = None,
          gears: dict | None = None, at: dict[str, int] | None = None,
          options: dict | None = None, batch: int | None = None) -> BenchResult:
    """Compile `model` for `target` and time it with the other engines in the same run.

    `batch`: throughput at that batch: every input's leading dim set to it (a static model is
    compiled at that shape, a torch-built zoo model exported at it; a symbolic leading dim is
    run at it), every engine fed the same batch.

    A model with symbolic dims compiles once (`dims` bounds them, `gears` for a static-shape
    family) and is timed at one shape: each symbol at `at[name]`, else its lower bound
    (Artifact.sizes_for); `result.sizes` says which. `shapes` compiles one static shape.
    `options`: the target family's options (e.g. {"dispatch": False})."""
    from .backend import CompileOptions
    from .driver import compile_source
    from .frontend import load_model
    from .inputs import random_inputs
    from .registry import get_backend, get_profile

    unknown = [e for e in against if e not in ENGINES + MORE_ENGINES]
    if unknown:
        raise AnychipError(f"--against {','.join(unknown)}: engines are "
                           f"{', '.join(ENGINES + MORE_ENGINES)}.")
    if warmup < 0 or repeat < 1:
        raise AnychipError("--warmup must be >= 0 and --repeat >= 1.")
    profile = get_profile(target)
    execution = get_backend(profile).execution(profile)
    if not execution.can_run:
        raise NotExecutable(f"target '{target}' cannot run here ({execution.mode.verb}): "
                            f"{execution.why}; bench needs a target that executes.")
    shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    from .driver import normalise_gears

    if batch is not None:
        shapes, at = batched(load_model(model, None, shapes, dims), batch, shapes, at)
    source = load_model(model, None, shapes, dims)
    artifact = compile_source(source, target, CompileOptions(
        precision=precision, shapes=shapes, dims=dict(source.extra.get("dims") or {}),
        gears=normalise_gears(gears), extra=dict(options or {})))
    threads = _threads_of(artifact)
    sizes = artifact.sizes_for(at)
    feed = random_inputs(artifact.inputs, seed, sizes)
    engines: dict[str, Callable[[], Any]] = {"anychip": lambda: artifact.run(feed)}
    notes: dict[str, str] = {}
    device = get_backend(profile).bench_device(profile)
    if "ort" in against:
        ort_run, note = _ort_engine(source, threads, device)
        engines["ort"] = lambda: ort_run(feed)
        if note:
            notes["ort"] = note
    if "torch" in against:
        torch_run, why = _torch_engine(model, source, threads, device)
        if why:
            notes["torch"] = why
        if torch_run is not None:
            engines["torch"] = lambda: torch_run(feed)
    if "torch.compile" in against:
        compiled_run, why = _torch_engine(model, source, threads, device, compiled=True)
        if compiled_run is not None:
            try:   # compile now (inductor), outside the timed runs; a failure says why
                compiled_run(feed)
                engines["torch.compile"] = lambda: compiled_run(feed)
            except Exception as exc:  # noqa: BLE001 - inductor/triton raise many types
                compiled_run = None
                why = f"torch.compile failed here: {(str(exc).splitlines() or ['?'])[0][:160]}"
        notes["torch.compile"] = why
    load_before = _load()
    timings = time_rounds(engines, warmup, repeat)
    samples = timings.steady
    ours = Latency.of(samples["anychip"])
    others: dict[str, dict | None] = {}
    ratio: dict[str, float | None] = {}
    for name in against:
        if name in samples:
            lat = Latency.of(samples[name])
            others[name] = _brief(lat)
            ratio[name] = ours.median / lat.median
        else:
            others[name], ratio[name] = None, None
    gflop = count_flops(_at_shape(source, feed) if sizes else source.original) / 1e9
    result = BenchResult(
        model=source.label, target=target, how=execution.mode.verb, threads=threads,
        warmup=warmup, repeat=repeat, latency_ms=_brief(ours), engines=others, ratio=ratio,
        notes=notes, gflop=gflop or None, sizes=sizes, batch=batch,
        after_idle_ms={n: statistics.median(v) * 1e3 for n, v in timings.after_idle.items()},
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        machine={"cpu": _cpu_name(), "cores_usable": usable_cores(),
                 **({"gpu": _gpu_name()} if device == "cuda" else {}),
                 "platform": platform.platform(),
                 "openmp_wait_policy": choose_openmp_wait_policy(),
                 "load_avg_before": load_before, "load_avg_after": _load()})
    if gflop:
        result.gflops = gflop / (ours.median / 1e3)
        if peak:
            result.peak_gflops = peak_gflops(threads, device=device)
            result.peak_pct = 100.0 * result.gflops / result.peak_gflops
    return result


def batched(source, batch: int, shapes: dict, at: dict | None) -> tuple[dict, dict | None]:
    """`shapes` and `at` with every input's leading dim at `batch`: a static leading dim
    becomes a shape override, a symbolic one a size to run at (its bounds must admit it)."""
    from .limits import MAX_STATIC_ELEMENTS

    if not 1 <= batch <= MAX_STATIC_ELEMENTS:
        raise AnychipError(f"--batch must be 1..{MAX_STATIC_ELEMENTS}, got {batch}.")
    shapes, at = dict(shapes), dict(at or {})
    for spec in source.inputs:
        if not spec.shape:
            continue
        if isinstance(spec.shape[0], str):
            at.setdefault(spec.shape[0], batch)
            continue
        shape = (batch, *(int(d) for d in spec.shape[1:]))
        if math.prod(shape) > MAX_STATIC_ELEMENTS:
            raise AnychipError(f"--batch {batch}: input '{spec.name}' would have "
                               f"{math.prod(shape)} elements, over the limit of "
                               f"{MAX_STATIC_ELEMENTS} (ANYCHIP limits); use a smaller batch.")
        shapes[spec.name] = shape
    return shapes, at or None


def _at_shape(source, feed: dict):
    """The original model specialised to the shapes of `feed` (FLOPs of a symbolic model are
    counted at the shape it ran at)."""
    from .frontend import load_model

    shapes = {s.name: tuple(feed[s.name].shape) for s in source.inputs if s.name in feed}
    return load_model(source.original, None, shapes).original


def _brief(lat: Latency) -> dict[str, float]:
    """Unrounded, so that ratio == latency_ms.median / engines[e].median holds exactly."""
    return {"median": lat.median, "min": lat.min, "max": lat.max}


def _threads_of(artifact) -> int:
    """The threads the artifact runs on: every engine gets as many."""
    return run_threads(artifact.manifest.get("runtime", {}).get("num_threads"))


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- output --------------------------------------------------------------------------------

def format_table(result: BenchResult) -> str:
    from .cli.common import table

    idle = result.after_idle_ms or {}

    def after_idle(name: str) -> str:
        return f"{idle[name]:.2f}" if name in idle else ""

    rows = [["anychip", result.how, f"{result.latency_ms['median']:.2f}",
             f"{result.latency_ms['min']:.2f}", f"{result.latency_ms['max']:.2f}",
             after_idle("anychip"), "1.00x"]]
    for name, lat in result.engines.items():
        if lat is None:
            rows.append([name, "-", "n/a", "", "", "", result.notes.get(name, "n/a")])
        else:
            ratio = result.ratio[name]
            rows.append([name, "executed", f"{lat['median']:.2f}", f"{lat['min']:.2f}",
                         f"{lat['max']:.2f}", after_idle(name),
                         f"{ratio:.2f}x (anychip/{name})"])
    at = (" at " + ", ".join(f"{k}={v}" for k, v in result.sizes.items())) \
        if result.sizes else ""
    at += f" at batch {result.batch}" if result.batch is not None else ""
    lines = [(f"{result.model} on {result.target}{at}: {result.threads} threads, {result.warmup} "
              f"warm-up + {result.repeat} steady-state runs per engine, in interleaved blocks "
              f"of {BLOCK} back to back ({result.date})"),
             table(["engine", "how", "median ms", "min ms", "max ms",
                    f"after {PAUSE_S * 1e3:.0f} ms idle", "ratio"], rows)]
    if result.gflops is not None:
        peak = (f", {result.peak_pct:.0f}% of the measured peak {result.peak_gflops:.0f} GFLOP/s"
                if result.peak_gflops else "")
        lines.append(f"{result.gflop:.2f} GFLOP per run (Conv/MatMul/Gemm): anychip "
                     f"{result.gflops:.0f} GFLOP/s{peak}")
    for name, note in result.notes.items():
        if result.engines.get(name) is not None:
            lines.append(f"{name}: {note}")
    if result.machine.get("gpu"):
        lines.append(f"GPU: {result.machine['gpu']}")
    load = result.machine.get("load_avg_before")
    if load:
        lines.append(f"machine: {result.machine['cpu']}, {result.machine['cores_usable']} cores "
                     f"usable, load average {load[0]} before / "
                     f"{(result.machine.get('load_avg_after') or ['?'])[0]} after; OpenMP "
                     f"wait policy: {result.machine.get('openmp_wait_policy')}")
    return "\n".join(lines)


def plot(result: BenchResult, path: str | Path, force: bool = False) -> Path:
    """A bar chart of median latency per engine (whiskers: min to max)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise AnychipError("--plot needs matplotlib, which is not installed; run "
                           "'pip install matplotlib' or drop --plot.") from exc
    from .atomic import write_file

    names = ["anychip"] + [n for n, v in result.engines.items() if v is not None]
    lats = [result.latency_ms] + [result.engines[n] for n in names[1:]]
    medians = [lat["median"] for lat in lats]
    errors = [[m - lat["min"] for m, lat in zip(medians, lats)],
              [lat["max"] - m for m, lat in zip(medians, lats)]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(names, medians, yerr=errors, capsize=4, color=["#3a7"] + ["#888"] * (len(names) - 1))
    ax.set_ylabel("latency (ms), median; whiskers min-max")
    ax.set_title(f"{result.model} on {result.target} ({result.threads} threads)", fontsize=9)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")

    try:
        return write_file(path, write, force=force)
    finally:
        plt.close(fig)
