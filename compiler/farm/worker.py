"""One farm job, in its own process on the device host: `python -m anychip.compiler.farm.worker
JOBDIR`.

The server (job.py) forks this for every job, with a time and memory limit, so an
artifact that crashes, hangs or exhausts memory ends this process only. Nothing native is
loaded before the checks: the manifest's sha256 must be the one the client computed, and
load_artifact compares every file with the manifest before it opens lib.so.

JOBDIR holds request.json, artifact/ and inputs.npz; this writes outputs.npz and result.json
({"ok": true, "how": "executed", ...} or {"ok": false, "error": "one line"}).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np


def _result(jobdir: Path, payload: dict) -> None:
    tmp = jobdir / "result.json.tmp"
    tmp.write_text(json.dumps(payload))
    tmp.replace(jobdir / "result.json")


def _time_remote(artifact, warmup: int, repeat: int, feed_list: list) -> dict:
    """Per-run seconds from TVM's time evaluator on this host (the VM's `main`); backends
    without a Relax VM (e.g. a CANN runner) are timed with a wall clock around `run`."""
    runner = artifact._runner
    vm, dev = getattr(runner, "_vm", None), getattr(runner, "_dev", None)
    if vm is not None and dev is not None:
        import tvm

        from ..importer_fixes.lowbit import to_storage

        args = [tvm.runtime.tensor(np.asarray(to_storage(a), order="C"), dev) for a in feed_list]
        vm.set_input("main", *args)
        timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=repeat,
                                  min_repeat_ms=0, cooldown_interval_ms=0)
        for _ in range(warmup):
            vm.invoke_stateful("main")
        runs = [float(r) for r in timer("main").results]
        return {"seconds": runs, "timer": "tvm time_evaluator (Relax VM main, on the server)"}
    for _ in range(warmup):
        artifact.run(dict(zip([s.name for s in artifact.inputs], feed_list)))
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        artifact.run(dict(zip([s.name for s in artifact.inputs], feed_list)))
        runs.append(time.perf_counter() - start)
    return {"seconds": runs, "timer": "wall clock around run (on the server)"}


def main(jobdir: Path) -> int:
    request = json.loads((jobdir / "request.json").read_text())
    from .process_limits import limit_this_process

    limit_this_process(float(request.get("limits", {}).get("memory_gb", 0)))
    from ..artifact import MANIFEST, load_artifact
    from ..errors import AnychipError

    try:
        manifest = jobdir / "artifact" / MANIFEST
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else ""
        if digest != request["manifest_sha256"]:
            raise AnychipError("the artifact's manifest.json is not the one the client sent "
                               "(sha256 differs); refused before loading anything.")
        try:
            artifact = load_artifact(jobdir / "artifact")
        except AnychipError as exc:
            raise AnychipError(f"refused before loading: {exc}") from exc
        execution = artifact.execution()
        if not execution.can_run:
            raise AnychipError(f"target '{artifact.target}' cannot run on this server "
                               f"({execution.mode.verb}): {execution.why}")
        from ..inputs import encode_npz, load_npz

        feed = load_npz(jobdir / "inputs.npz")     # bfloat16 & co travel as bit patterns
        start = time.perf_counter()
        outputs = artifact.run(feed)
        seconds = time.perf_counter() - start
        payload = {"ok": True, "how": execution.mode.verb, "why": execution.why,
                   "target": artifact.target, "run_seconds": seconds}
        if request.get("mode") == "bench":
            from ..inputs import order_inputs

            ordered = order_inputs(artifact.inputs, feed, "farm job")
            payload["bench"] = _time_remote(artifact, int(request.get("warmup", 3)),
                                            int(request.get("repeat", 10)), ordered)
        with open(jobdir / "outputs.npz.tmp", "wb") as fh:
            np.savez(fh, **encode_npz(outputs))
        (jobdir / "outputs.npz.tmp").replace(jobdir / "outputs.npz")
        _result(jobdir, payload)
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the client as one line
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
        if not isinstance(exc, AnychipError):
            line = f"{type(exc).__name__}: {line}"
        _result(jobdir, {"ok": False, "error": line})
        return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
