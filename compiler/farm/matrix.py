"""The model x target matrix across the farm.

Each cell runs in a worker process (spawned: TVM and ONNX Runtime threads do not survive a
fork): compile here, run on a free server of the target's key (the tracker hands them out
and queues the rest), compare here with ONNX Runtime, exactly as a local cell (run_cell).
Local work (compile, reference run) is bounded by a semaphore of this machine's cores; a
cell waiting for its server holds no slot, so there are as many workers as cores plus
servers, and every free server gets a cell. A cell whose server is lost mid-job (killed,
host down) is run once more on another server; a target no server serves is compiled here
and marked "compiled only (no device in the farm)".
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed

from ..conformance.matrix import COMPILED_ONLY, FAILED, Cell
from .client import FarmSpec, RemoteRunner, ServerLost

NO_DEVICE = "no device in the farm"
HERE = "here"        # progress group of cells with no server

_slots = None         # the worker's handle on the local-work semaphore


def _init_worker(slots) -> None:
    global _slots
    _slots = slots
    import os

    os.environ.setdefault("TVM_NUM_THREADS", "1")


class _SlotReleasingRunner:
    """Runs the job remotely; gives the local slot back while waiting on the server, and
    remembers a lost server (the one failure that is retried)."""

    def __init__(self, runner: RemoteRunner):
        self.runner, self.lost = runner, None

    def __call__(self, artifact, feed):
        if _slots is not None:
            _slots.release()
        try:
            return self.runner(artifact, feed)
        except ServerLost as exc:
            self.lost = str(exc)
            raise
        finally:
            if _slots is not None:
                _slots.acquire()


def farm_cell(model: str, target: str, spec: FarmSpec, key: str | None,
              options: dict | None = None) -> Cell:
    """One cell on the farm (in a worker process); `options` as run_cell takes them."""
    from ..conformance.matrix import UNAVAILABLE, run_cell

    if _slots is not None:
        _slots.acquire()
    try:
        if key is None:
            return _compile_here(model, target, options)
        lost = None
        for _ in range(2):
            runner = _SlotReleasingRunner(RemoteRunner(spec, key))
            cell = run_cell(model, target, remote=runner, options=options)
            if runner.lost is None or cell.status == UNAVAILABLE:
                break
            lost = runner.lost
        if lost and runner.lost is None:
            cell.where += f"; retried after: {lost[:120]}"
        return cell
    finally:
        if _slots is not None:
            _slots.release()


def _compile_here(model: str, target: str, options: dict | None = None) -> Cell:
    from ..backend import Mode
    from ..conformance.matrix import UNAVAILABLE
    from ..driver import compile_model
    from ..errors import AnychipError
    from ..registry import execution, get_profile

    start = time.perf_counter()
    mode = execution(get_profile(target))
    if mode.mode is Mode.UNAVAILABLE:
        return Cell(model, target, UNAVAILABLE, False, reason=mode.why)
    cell = Cell(model, target, FAILED, False, how=COMPILED_ONLY)
    try:
        artifact = compile_model(model, target=target, **(options or {}))
        cell.status, cell.passed, cell.precision = COMPILED_ONLY, True, artifact.precision
        cell.symbols = {n: [lo, hi] for n, (lo, hi) in artifact.symbols.items()}
        cell.reason = NO_DEVICE
    except AnychipError as exc:
        cell.reason = str(exc).splitlines()[0][:300]
    except Exception as exc:  # noqa: BLE001 - a TVM or anychip bug is a failed cell
        cell.reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[-1][:300]}"
    cell.seconds = round(time.perf_counter() - start, 2)
    return cell


def farm_matrix(models: list[str], targets: list[str], spec: FarmSpec, progress=None,
                local_slots: int | None = None, on_done=None,
                options: dict | None = None) -> list[Cell]:
    """Cells in models x targets order. `progress(line)` gets one line per finished cell
    with the count done / total of its key; `on_done(cell)` is called as each finishes."""
    from ..dispatch import usable_cores

    keys_now = spec.keys()
    key_of = {t: spec.key_for(t, keys_now) for t in targets}
    group = {t: key_of[t] or HERE for t in targets}
    totals = Counter(group[t] for t in targets for _ in models)
    servers = sum(keys_now.get(k, 0) for k in set(key_of.values()) if k)
    if spec.tracker is None:
        servers = 1
    slots_n = max(1, local_slots or usable_cores())
    cells_n = len(models) * len(targets)
    ctx = mp.get_context("spawn")
    slots = ctx.Semaphore(slots_n)
    done = Counter()
    order = [(m, t) for m in models for t in targets]
    results: dict[tuple[str, str], Cell] = {}
    with ProcessPoolExecutor(max_workers=max(1, min(cells_n, slots_n + servers)),
                             mp_context=ctx, initializer=_init_worker,
                             initargs=(slots,)) as pool:
        futures = {pool.submit(farm_cell, m, t, spec, key_of[t], options): (m, t) for m, t in order}
        for future in as_completed(futures):
            model, target = futures[future]
            try:
                cell = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died is a failed cell
                cell = Cell(model, target, FAILED, False,
                            reason=f"worker process failed: {type(exc).__name__}: {exc}"[:300])
            results[(model, target)] = cell
            g = group[target]
            done[g] += 1
            if on_done is not None:
                on_done(cell)
            if progress is not None:
                where = f" on {cell.where}" if cell.where else ""
                progress(f"[{g} {done[g]}/{totals[g]}] {model} on {target}: {cell.text()}"
                         f"{where} ({cell.seconds:.1f} s)")
    return [results[k] for k in order]


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
