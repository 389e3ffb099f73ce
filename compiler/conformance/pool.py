"""Isolation: cases run in worker processes, one case at a time, each under a time limit.

A case that hangs is killed at its limit. The limit scales with the machine's load (the 1-minute
load average per usable core, at least 1, at most MAX_LOAD_FACTOR), and a case that timed out is
run once more alone, after the others, with RETRY_FACTOR times the (re-scaled) limit, so load on
a small machine cannot turn a pass into a failure (LSTM/RNN cases took over 20 s on a loaded
2-core machine); a second time-out is a failure ("timed out"). One that crashes the worker
(a segfault in generated code, an abort in TVM) is failed with the signal; either way a fresh
worker takes the next case, so one bad case never ends the run. Workers are also replaced
every `recycle` cases to bound what TVM's caches and leaked modules hold. Workers are spawned
(not forked): TVM and ONNX Runtime start threads that a fork would copy half-way.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import cases as case_store
from .cases import Case
from .engines import FAILED, Result

DEFAULT_TIMEOUT_S = 20.0
RETRY_FACTOR = 2.0
MAX_LOAD_FACTOR = 8.0


def load_factor() -> float:
    """How many times longer a case may take now than on an idle machine: the 1-minute load
    average per usable core, clamped to [1, MAX_LOAD_FACTOR]."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 1.0
    return min(MAX_LOAD_FACTOR, max(1.0, load / max(1, cores)))
READY_TIMEOUT_S = 180.0


RUNNER = "anychip.compiler.conformance.engines:run_case"


def _load_runner(spec: str) -> Callable:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _worker_main(conn, cases_path: str, engine: str, runner: str, options: dict) -> None:
    """Worker loop: read a case name, run it, send back its result as a dict."""
    import warnings

    warnings.filterwarnings("ignore")
    _silence_native_output()
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    run_case = _load_runner(runner)
    store = case_store.load(Path(cases_path))
    if engine != "ort" and runner == RUNNER:
        _warm_up(engine)
    conn.send("ready")
    while True:
        try:
            name = conn.recv()
        except EOFError:
            return
        if name is None:
            return
        conn.send(run_case(store[name], engine, **options).as_dict())


def _silence_native_output() -> None:
    """TVM and ONNX Runtime print from C++ straight to file descriptors 1 and 2; a worker's
    findings travel through its pipe, so its own output goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _warm_up(engine: str) -> None:
    """Pay TVM's one-time initialisation (several seconds) before any case's clock starts."""
    import onnx
    from onnx import TensorProto, helper

    from ..backend import CompileOptions
    from ..driver import compile_source
    from ..frontend import load_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "warm", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        compile_source(load_model(onnx.ModelProto.FromString(model.SerializeToString())),
                       engine, CompileOptions())
    except Exception:  # noqa: BLE001 - the cases will report the real error
        pass


class _Worker:
    def __init__(self, ctx, cases_path: Path, engine: str, runner: str, options: dict):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main,
                                args=(child, str(cases_path), engine, runner, options),
                                daemon=True)
        self.proc.start()
        child.close()
        self.done = 0

    def wait_ready(self) -> bool:
        return self.conn.poll(READY_TIMEOUT_S) and self._recv() == "ready"

    def _recv(self):
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def run(self, case: Case, timeout: float) -> Result:
        start = time.perf_counter()
        try:
            self.conn.send(case.name)
        except (BrokenPipeError, OSError):
            return Result(case.name, case.op, FAILED, "worker died before the case started")
        if not self.conn.poll(timeout):
            self.kill()
            return Result(case.name, case.op, FAILED, f"timed out after {timeout:.0f} s",
                          round(time.perf_counter() - start, 3))
        reply = self._recv()
        if reply is None:
            self.proc.join(5)
            code = self.proc.exitcode
            why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            return Result(case.name, case.op, FAILED, f"crashed the worker ({why})",
                          round(time.perf_counter() - start, 3))
        self.done += 1
        return Result(**reply)

    def alive(self) -> bool:
        return self.proc.is_alive()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.kill()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)


def run_cases(selected: list[Case], engine: str, jobs: int = 2,
              timeout: float = DEFAULT_TIMEOUT_S, recycle: int = 150,
              progress: Callable[[Result, int, int], None] | None = None,
              runner: str = RUNNER, options: dict | None = None) -> list[Result]:
    """Run `selected` on `engine` ('ort' or a target name) in `jobs` workers; results in order.
    `runner` ("module:function", called as f(case, engine, **options) -> Result) is what a
    worker runs; tests name a stand-in to prove the isolation. `options` are keyword arguments
    for the runner (e.g. precision_mode)."""
    options = dict(options or {})
    if not selected:
        return []
    ctx = mp.get_context("spawn")
    todo: queue.Queue = queue.Queue()
    for index, case in enumerate(selected):
        todo.put(index)
    results: list[Result | None] = [None] * len(selected)
    lock = threading.Lock()
    finished = [0]

    limit = timeout * load_factor()
    with tempfile.TemporaryDirectory(prefix="anychip-conformance-") as tmp:
        path = Path(tmp) / "cases.pkl"
        case_store.save(selected, path)

        def drive() -> None:
            worker = None
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    break
                case = selected[index]
                if worker is None or not worker.alive() or worker.done >= recycle:
                    if worker is not None:
                        worker.stop()
                    worker = _Worker(ctx, path, engine, runner, options)
                    if not worker.wait_ready():
                        worker.kill()
                        worker = None
                        results[index] = Result(case.name, case.op, FAILED,
                                                "the worker process failed to start")
                        continue
                result = worker.run(case, limit)
                results[index] = result
                with lock:
                    finished[0] += 1
                    if progress is not None:
                        progress(result, finished[0], len(selected))
            if worker is not None:
                worker.stop()

        threads = [threading.Thread(target=drive, daemon=True)
                   for _ in range(max(1, min(jobs, len(selected))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _retry_timeouts_alone(selected, results, ctx, path, engine, runner, options, timeout)
    return [r for r in results if r is not None]


def _retry_timeouts_alone(selected: list[Case], results: list, ctx, path: Path, engine: str,
                          runner: str, options: dict, timeout: float) -> None:
    """Run each timed-out case again in a fresh worker with no other worker alive, under
    RETRY_FACTOR x the limit; its result replaces the first one (the reason says it was
    retried when it times out again)."""
    again = [i for i, r in enumerate(results)
             if r is not None and r.status == FAILED and r.reason.startswith("timed out")]
    for index in again:
        case = selected[index]
        worker = _Worker(ctx, path, engine, runner, options)
        if not worker.wait_ready():
            worker.kill()
            continue
        limit = timeout * RETRY_FACTOR * load_factor()
        result = worker.run(case, limit)
        worker.stop()
        if result.status == FAILED and result.reason.startswith("timed out"):
            result.reason = (f"timed out, and again after {limit:.0f} s run alone "
                             f"({timeout:g} s x {RETRY_FACTOR:g} x load factor)")
        results[index] = result
