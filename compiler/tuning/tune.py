"""`anychip tune`: MetaSchedule on the kernels TVM compiles for a model, into the database.

The model is lowered by its backend first, so kernels a library takes over (library
dispatch) are not tuned: only what TVM itself will compile. Tuning runs in rounds; after
each round the new records are appended to the database (a killed run keeps what earlier
rounds committed) and one line per task reports the best latency so far.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import AnychipError, NotExecutable
from .database import TuningDatabase, entry, user_database_path
from .intrinsics import import_tensor_intrinsics

TRIALS_PER_ROUND = 8      # per task: one MetaSchedule trial costs 3-4 s on 2 cores
# MetaSchedule's 30 s default kills builds on a loaded 2-core machine (a builder worker first
# imports TVM); every candidate then "fails" and nothing is learned.
BUILD_TIMEOUT_S = 180
RUN_TIMEOUT_S = 60


@dataclass
class TuneReport:
    model: str
    target: str
    database: str
    tasks: list[str] = field(default_factory=list)
    trials: int = 0
    records_added: int = 0
    best_us: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    measured_on: str = "this machine"      # or "the farm's 'KEY' servers (tracker HOST:PORT)"


def fused_module(mod, target):
    """The Relax module after legalization and fusion: the form MetaSchedule extracts tasks
    from and applies records to (docs/tvm-notes.md)."""
    import tvm
    from tvm import relax

    with target:
        return tvm.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), relax.transform.FuseOps(),
            relax.transform.FuseTIR()])(mod)


def kernels_with_records(mod, target, database) -> int:
    """How many of the module's TVM kernels `database` has a record for: what a compile
    actually applies (a record for another form of the same kernel is never used)."""
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(fused_module(mod, target), target)
    return sum(1 for task in tasks if database.has_workload(task.dispatched[0]))


def tune(model, target: str = "cpu", trials: int | None = None, minutes: float | None = None,
         database: str | None = None, shapes: dict | None = None,
         progress: Callable[[str], None] = print, farm=None) -> TuneReport:
    """Tune `model`'s TVM kernels for `target`. `farm` (compiler/farm FarmSpec with a tracker)
    measures candidates on the farm's servers of the target's key through MetaSchedule's RPC
    runner, so the records are made on the device they are for; their key is the target's, as
    for local tuning."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    from ..backend import CompileOptions, Mode
    from ..driver import import_for, new_context
    from ..frontend import load_model
    from ..registry import get_backend, get_profile

    if trials is not None and trials < 1 or minutes is not None and minutes <= 0:
        raise AnychipError("--trials must be >= 1 and --minutes > 0.")
    missing = [m for m in ("cloudpickle", "tornado") if importlib.util.find_spec(m) is None]
    if missing:
        raise AnychipError(f"anychip tune needs {', '.join(missing)} (MetaSchedule's worker "
                           f"processes): pip install {' '.join(missing)}.")
    profile = get_profile(target)
    backend = get_backend(profile)
    execution = backend.execution(profile)
    rpc_config = _farm_rpc(farm, target) if farm is not None else None
    if rpc_config is None and execution.mode is not Mode.EXECUTES:
        raise NotExecutable(f"target '{target}' cannot run here ({execution.mode.verb}): "
                            f"{execution.why}; tuning measures kernels on the target itself.")
    path = database or user_database_path()
    if path is None:
        raise AnychipError("no usable cache folder for the tuning database; pass --db FILE.")
    db = TuningDatabase(path)
    shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    source = load_model(model, None, shapes)
    # the family's options for kernels MetaSchedule can tune (cpu: libm, not fast_math)
    options = CompileOptions(shapes=shapes, extra=dict(getattr(backend, "tuning_options", {})))
    tvm_target = backend.target(profile)
    ctx = new_context(backend, profile, options, source)   # as compile_source makes it
    lowered = backend.lower(import_for(backend, source, profile, ctx), profile, options, ctx)
    fused = fused_module(lowered, tvm_target)
    tasks = ms.relax_integration.extract_tasks(fused, tvm_target)
    report = TuneReport(source.label, target, str(path), [t.task_name for t in tasks])
    if rpc_config is not None:
        report.measured_on = (f"the farm's '{rpc_config[0].tracker_key}' servers "
                              f"({farm.label})")
    if not tasks:
        progress("nothing to tune: every kernel of this model goes to a library or is trivial")
        return report
    budget_trials = trials if trials is not None else (None if minutes else 32 * len(tasks))
    started = time.perf_counter()
    seen: set[str] = set()
    # MetaSchedule logs every round to stdout; the progress line below says what matters
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    # MetaSchedule imports TVM's tensor intrinsics here and in every builder worker: the cheap
    # way first (87 s -> 16 s a process on 2 cores, compiler/tuning/intrinsics.py)
    import_tensor_intrinsics()
    builder = ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S,
                                      initializer=import_tensor_intrinsics)
    runner = ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S) if rpc_config is None else \
        ms.runner.RPCRunner(rpc_config=rpc_config[0], max_workers=rpc_config[1])
    with tempfile.TemporaryDirectory(prefix="anychip-tune-") as work_dir:
        with _named_handlers_only():
            contexts, weights = extracted_tasks_to_tune_contexts(
                tasks, work_dir=work_dir, strategy=_strategy(budget_trials, len(tasks)))
        while True:
            step = TRIALS_PER_ROUND * len(tasks)
            if budget_trials is not None:
                step = min(step, budget_trials - report.trials)
            if step <= 0:
                break
            ms_db = ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir,
                                       max_trials_global=step,
                                       num_trials_per_iter=min(step, 16), builder=builder,
                                       runner=runner, cost_model=_cost_model())
            report.trials += step
            report.records_added += _commit_new(ms_db, str(tvm_target), db, seen)
            report.best_us = _best(ms_db, tasks)
            elapsed = time.perf_counter() - started
            progress(f"[{elapsed / 60:.1f} min, {report.trials} trials] best: " + ", ".join(
                f"{name} {us:.1f} us" for name, us in report.best_us.items()))
            if minutes is not None and elapsed >= minutes * 60:
                break
    report.seconds = time.perf_counter() - started
    return report


@contextlib.contextmanager
def _named_handlers_only():
    """TVM's MetaSchedule `create_loggers` lists its logger's handlers by name and fails on an
    unnamed one ("'NoneType' object has no attribute 'format'"): pytest's log capture attaches
    such handlers, as an application's own logging may; a second `tune` in one process then
    failed. Unnamed handlers are detached while it configures, and put back."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in logger.handlers if not h.get_name()]
    for handler in unnamed:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in unnamed:
            logger.addHandler(handler)


def _farm_rpc(farm, target: str):
    """(MetaSchedule RPCConfig, servers) for the farm's servers of `target`'s key; exit 3
    when the farm has none (or is not a tracker: the RPC runner books servers through one)."""
    from tvm.s_tir import meta_schedule as ms

    from ..farm.client import runner_for

    if farm.tracker is None:
        raise AnychipError("anychip tune measures on the farm through a tracker: use "
                           "--tracker HOST:PORT, not --remote.")
    key = runner_for(farm, target).key
    servers = max(1, farm.keys().get(key, 1))
    config = ms.runner.RPCConfig(tracker_host=farm.tracker[0], tracker_port=farm.tracker[1],
                                 tracker_key=key, session_timeout_sec=RUN_TIMEOUT_S)
    return config, servers


def _strategy(budget_trials: int | None, n_tasks: int):
    """MetaSchedule's evolutionary search, its population sized to the budget: the default
    (512 candidates, 4 genetic rounds per iteration) costs minutes of sampling and
    cost-model scoring on 2 cores before the first of a handful of trials is measured."""
    from tvm.s_tir import meta_schedule as ms

    if budget_trials is None:
        return "evolutionary"
    per_task = max(1, budget_trials // max(1, n_tasks))
    population = min(512, max(32, 16 * per_task))
    return ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 2),
        genetic_num_iters=4 if population >= 256 else 2)


def _cost_model() -> str:
    """XGBoost's model when installed (MetaSchedule's default), else random search."""
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "random"
    return "xgb"


def _commit_new(ms_db, target: str, db: TuningDatabase, seen: set[str]) -> int:
    import json

    fresh = []
    for record in ms_db.get_all_tuning_records():
        line = entry(target, record)
        key = json.dumps([line["workload"][0], line["record"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            if record.run_secs:   # a failed build or run has no measurement
                fresh.append(line)
    if fresh:
        db.append(fresh)
    return len(fresh)


def _best(ms_db, tasks) -> dict[str, float]:
    best = {}
    for task in tasks:
        for mod in task.dispatched:
            if not ms_db.has_workload(mod):
                continue
            top = ms_db.get_top_k(ms_db.commit_workload(mod), 1)
            if top and top[0].run_secs:
                secs = sum(float(s) for s in top[0].run_secs) / len(top[0].run_secs)
                best[task.task_name] = min(best.get(task.task_name, float("inf")), secs * 1e6)
    return best
