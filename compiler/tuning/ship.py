"""Make the tuning database that ships with the package, from databases `anychip tune` wrote.

    python -m anychip.compiler.tuning.ship DB.jsonl [DB.jsonl ...] -o compiler/tuning/data/F

A tuning run keeps every measured candidate (megabytes); the package needs one record per
kernel and exact target, and only where it helps: MetaSchedule compares candidates with each
other, never with the default schedule a compile uses without a record (backends/host/
schedule.py), so its best can still be slower. For each kernel this keeps the best record,
then builds that record's schedule and the default one for this host and times both,
alternating, with TVM's time_evaluator; a record ships only if it is faster by `min_gain`.
Records for another target are kept as they are, unmeasured (they cannot be timed here).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import AnychipError
from ..tolerances import compare, tolerance_for
from .database import TuningDatabase

MIN_GAIN = 0.05           # a record must beat the default schedule by 5 % to ship


@dataclass
class Decision:
    task: str
    default_us: float | None
    tuned_us: float | None
    shipped: bool

    def line(self) -> str:
        if self.default_us is None:
            return f"{self.task}: kept unmeasured (another target)"
        verdict = "ship" if self.shipped else "drop"
        return (f"{self.task}: default {self.default_us:.1f} us, tuned {self.tuned_us:.1f} us "
                f"-> {verdict}")


def _mean_secs(line: dict) -> float:
    secs = [float(s) for s in (line["record"][1] or [])]
    return sum(secs) / len(secs) if secs else float("inf")


def best_per_kernel(paths: list[Path]) -> list[dict]:
    """One line per (target, workload): the one with the lowest measured time."""
    best: dict[tuple[str, str], dict] = {}
    for path in paths:
        db = TuningDatabase(path)
        for line in db.lines():
            key = (line["target"], line["workload"][0])
            if key not in best or _mean_secs(line) < _mean_secs(best[key]):
                best[key] = line
    return list(best.values())


def _task_name(mod) -> str:
    """A kernel's block names (workloads carry no task name): 'T_transpose', 'pool_sum+...'."""
    names = [n for n in re.findall(r'T\.sblock\("(\w+)"\)', mod.script()) if n != "root"]
    return "+".join(dict.fromkeys(names)) or "kernel"


def measure(line: dict, rounds: int = 5) -> tuple[str, float, float]:
    """(kernel name, default schedule µs, tuned µs): medians over `rounds` alternating runs."""
    import numpy as np
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.dlight import ApplyDefaultSchedule

    from anychip.backends.host.schedule import schedule_rules

    target = tvm.target.Target(json.loads(line["target"]))
    workload = ms.database.Workload.from_json(line["workload"])
    record = ms.database.TuningRecord.from_json(line["record"], workload)
    sch = s_tir.Schedule(workload.mod)
    # dlight's pass schedules the functions of the module it is given in place: a fresh copy
    with target:
        default = ApplyDefaultSchedule(*schedule_rules())(
            ms.database.Workload.from_json(line["workload"]).mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    tuned = s_tir.transform.RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(sch.mod)
    dev = tvm.cpu()
    args = []
    rng = np.random.default_rng(0)
    for info in ms.arg_info.ArgInfo.from_prim_func(workload.mod["main"]):
        shape, dtype = [int(d) for d in info.shape], str(info.dtype)
        value = rng.standard_normal(shape).astype(dtype) if "float" in dtype else \
            np.zeros(shape, dtype)
        args.append(tvm.runtime.tensor(value, dev))
    kernels = [tvm.compile(mod, target=target).jit() for mod in (default, tuned)]
    results = []
    for kernel in kernels:       # the output buffers are the last arguments (DPS)
        kernel["main"](*args)
        results.append([a.numpy().copy() for a in args])
    # a tuned reduction may sum in another order: fp32's tolerance, exact for integers
    if not all(compare(y, x, tolerance_for("fp32", x.dtype)).passed
               for x, y in zip(*results)):
        raise AnychipError(f"the tuned schedule of kernel {_task_name(workload.mod)} computes "
                           f"other values than the default one; its record is not shipped.")
    timers = [kernel.time_evaluator("main", dev, number=10, min_repeat_ms=50)
              for kernel in kernels]
    samples: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, timer in enumerate(timers):
            samples[i].append(timer(*args).median * 1e6)
    return _task_name(workload.mod), statistics.median(samples[0]), statistics.median(samples[1])


def select(lines: list[dict], host_target: str, min_gain: float = MIN_GAIN,
           progress=print) -> tuple[list[dict], list[Decision]]:
    kept, decisions = [], []
    for line in lines:
        if line["target"] != host_target:
            kept.append(line)
            decisions.append(Decision("?", None, None, True))
            continue
        try:
            name, default_us, tuned_us = measure(line)
        except AnychipError as exc:
            progress(str(exc))
            continue
        shipped = tuned_us < default_us * (1 - min_gain)
        decisions.append(Decision(name, default_us, tuned_us, shipped))
        progress(decisions[-1].line())
        if shipped:
            kept.append(line)
    return kept, decisions


def main(argv: list[str] | None = None) -> int:
    from anychip.compiler.atomic import write_file
    from anychip.compiler.registry import get_backend, get_profile

    parser = argparse.ArgumentParser(prog="python -m anychip.compiler.tuning.ship",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("databases", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--min-gain", type=float, default=MIN_GAIN)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.databases if not p.is_file()]
    if missing:
        print(f"error: no such tuning database: {', '.join(missing)}", file=sys.stderr)
        return 2
    profile = get_profile("cpu")
    host_target = str(get_backend(profile).target(profile))
    lines = best_per_kernel(args.databases)
    kept, _ = select(lines, host_target, args.min_gain)

    def write(tmp: Path) -> None:
        tmp.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in kept))

    try:       # written beside the destination, then renamed: never half a file
        write_file(args.output, write, force=args.force)
    except AnychipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(kept)} of {len(lines)} kernels' records written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
