"""A stand-in for the conformance engine, run inside pool workers: it hangs, crashes or
passes depending on the case name, to prove the pool's isolation without TVM."""

from __future__ import annotations

import os
import time

from anychip.compiler.conformance.engines import PASSED, Result


def run_case(case, engine: str) -> Result:
    if "hang" in case.name:
        time.sleep(600)
    if "slow" in case.name:         # 3 s: over a 2 s limit, within the 4 s of the retry
        time.sleep(3)
    if "crash" in case.name:
        os.abort()
    return Result(case.name, case.op, PASSED, f"ran on {engine} in pid {os.getpid()}")
