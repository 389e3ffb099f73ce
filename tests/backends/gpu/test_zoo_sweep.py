"""Zoo models through every GPU profile (families cuda and gpu), compile only.

The whole matrix (15 zoo models on 13 profiles with nvcc/ld.lld/PoCL checks) takes about an
hour on 2 cores, so by default zoo:mlp is compiled for every profile and each other zoo model
for one profile, taking the profiles in turn, cheapest models first (seconds measured on
2 cores, below); once BUDGET_S seconds are spent the rest skip, saying so.
ANYCHIP_GPU_SWEEP=full runs the whole matrix with no budget.
"""

from __future__ import annotations

import itertools
import os
import time

import pytest

import anychip
from anychip.backends.gpu.dialects import hip_toolchain
from anychip.compiler.registry import profiles

TARGETS = sorted(n for n, p in profiles().items() if p.family in ("cuda", "gpu"))
FULL = os.environ.get("ANYCHIP_GPU_SWEEP") == "full"
BUDGET_S = 240.0
# Compile seconds measured here (one profile each, idle machine); unknown models go first.
MEASURED_S = {"mlp": 3, "squeezenet": 11, "llama": 11, "gpt2": 12, "vit": 12, "bert": 15,
              "resnet18": 15, "bvlc_alexnet": 15, "zfnet512": 18, "vgg19": 23, "resnet50": 29,
              "shufflenet": 32, "inception_v1": 41, "inception_v2": 65, "densenet121": 94,
              # nvidia-h100, 2026-12-04 under load 6 (a full test run alongside): budget-skipped
              "efficientnet": 146, "mobilenet_v3": 181}
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
    first = [("mlp", t) for t in TARGETS] if "mlp" in names else []
    rest = sorted((n for n in names if n != "mlp"), key=lambda n: MEASURED_S.get(n, 0))
    return first + [(model, TARGETS[i % len(TARGETS)]) for i, model in enumerate(rest)]


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
