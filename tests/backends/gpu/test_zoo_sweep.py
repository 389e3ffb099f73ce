"""Zoo models through every GPU profile (families cuda and gpu), compile only.

The whole matrix (every zoo model on every profile, ~13 x 12 compiles with nvcc/PoCL checks)
takes far longer than CI's budget on 2 cores, so by default each zoo model is compiled for one
profile, taking the profiles in turn, which covers every model and every profile (and so every
dialect) in about one compile per model, and stops compiling (skips, saying so) once
BUDGET_S seconds are spent. ANYCHIP_GPU_SWEEP=full runs the whole matrix with no budget.
"""

from __future__ import annotations

import itertools
import os
import time

import anychip
import pytest
from anychip.backends.gpu.dialects import hip_toolchain
from anychip.compiler.registry import profiles

TARGETS = sorted(n for n, p in profiles().items() if p.family in ("cuda", "gpu"))
FULL = os.environ.get("ANYCHIP_GPU_SWEEP") == "full"
BUDGET_S = 300.0
_spent = [0.0]


def zoo_names() -> list[str]:
    try:
        from anychip import models

        return sorted(models.names())
    except (ImportError, AttributeError):
        return []


def sweep() -> list[tuple[str, str]]:
    names = zoo_names()
    if FULL:
        return list(itertools.product(names, TARGETS))
    pairs = [(model, TARGETS[i % len(TARGETS)]) for i, model in enumerate(names)]
    covered = {t for _, t in pairs}
    smallest = "mlp" if "mlp" in names else (names[0] if names else None)
    return pairs + [(smallest, t) for t in TARGETS if t not in covered and smallest]


@pytest.mark.slow
@pytest.mark.parametrize("model,target", sweep() or [("(zoo not built)", "-")])
def test_zoo_model_compiles(model, target):
    if target == "-":
        pytest.skip("the model zoo (anychip.models.names) is not available")
    if profiles()[target].chip.get("dialect") == "hip" and not hip_toolchain()[0]:
        pytest.skip(f"HIP codegen unavailable here: {hip_toolchain()[1]}")
    if not FULL and _spent[0] > BUDGET_S:
        pytest.skip(f"sweep budget of {BUDGET_S:.0f} s spent; ANYCHIP_GPU_SWEEP=full runs all")
    started = time.perf_counter()
    try:
        art = anychip.compile(f"zoo:{model}", target=target)
    finally:
        _spent[0] += time.perf_counter() - started
    report = art.report
    assert report["kernels"] >= 1
    assert report["max_threads_per_block_used"] <= profiles()[target].target["max_num_threads"]
    assert art.device_files(), "no device code in the artifact"
    assert report["device_code"].get("checked_by", "nvcc") != ""
