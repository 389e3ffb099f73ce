"""`anychip bench --tracker/--remote`: latency measured on the farm's device by TVM's time
evaluator, with what the farm itself costs (upload, job start, download) reported apart.

ONNX Runtime and torch are not timed against it: they would run on this machine, and a ratio
between two machines says nothing about the compiler.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass


@dataclass
class RemoteBench:
    model: str
    target: str
    how: str
    where: str
    precision: str
    timer: str
    runs: int
    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    rpc_round_trip_ms: float    # median of 5 empty RPC calls: the network's own latency
    upload_s: float             # artifact + inputs over the network, for one job
    job_overhead_s: float       # a plain run's round trip minus upload and its server time:
    #                             job process start, hash checks, load, outputs download

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def text(self) -> str:
        return (f"{self.model} on {self.target} ({self.how} on {self.where}, {self.precision})\n"
                f"  device latency: median {self.median_ms:.3f} ms, mean {self.mean_ms:.3f}, "
                f"min {self.min_ms:.3f}, max {self.max_ms:.3f} over {self.runs} runs "
                f"({self.timer})\n"
                f"  farm overhead, not in the latency: RPC round trip "
                f"{self.rpc_round_trip_ms:.2f} ms, artifact upload {self.upload_s:.2f} s per "
                f"job, job start/check/load/download {self.job_overhead_s:.2f} s per job")


def remote_bench(model: str, target: str, spec, warmup: int = 3, repeat: int = 10,
                 shapes: dict | None = None, precision: str | None = None,
                 at: dict[str, int] | None = None, **dynamic) -> RemoteBench:
    """Compile here, then time on a farm server: one session, two jobs (a plain run, whose
    round trip minus its server-side time is the network overhead; then the timed runs).
    A symbolic model (`dims=`, `gears=`) is timed at one shape, each symbol at `at[name]` or
    its lower bound; the model label says which."""
    from ..driver import compile_model
    from ..inputs import random_inputs
    from .client import Session, runner_for

    runner = runner_for(spec, target)     # exit 3 before compiling when there is no server
    artifact = compile_model(model, target=target, shapes=shapes or None, precision=precision,
                             **dynamic)
    sizes = artifact.sizes_for(at)
    feed = random_inputs(artifact.inputs, 0, sizes)
    if sizes:
        model = f"{model} at " + ", ".join(f"{k}={v}" for k, v in sizes.items())
    with Session(spec, runner.key) as session:
        ping_ms = statistics.median(session.ping() * 1e3 for _ in range(5))
        plain = session.run(artifact, feed)
        timed = session.run(artifact, feed, mode="bench", warmup=warmup, repeat=repeat)
    runs_ms = [s * 1e3 for s in timed.bench["seconds"]]
    job_s = plain.round_trip_seconds - plain.upload_seconds - plain.run_seconds
    return RemoteBench(model, target, timed.how, timed.where, artifact.precision,
                       timed.bench["timer"], len(runs_ms), statistics.median(runs_ms),
                       statistics.fmean(runs_ms), min(runs_ms), max(runs_ms), ping_ms,
                       round(plain.upload_seconds, 3), round(max(0.0, job_s), 3))
