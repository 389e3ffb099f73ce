"""Per-target judgement: dtypes from the chip's profile, the rest from the vendor's stack."""

from __future__ import annotations

from pathlib import Path

import pytest
from anychip.compiler.errors import AnychipError
from anychip.compiler.scan.targets import judge, select
from anychip.compiler.scan.walk import scan_path

MIXED = Path(__file__).parent / "fixtures" / "mixed"


def _judged(target=None, family=None):
    result = scan_path(MIXED)
    judge(result, select(target, family))
    return result


def _severity(result, rule, line=None):
    return {f.severity for f in result.findings
            if f.rule == rule and (line is None or f.line == line)}


def test_bf16_blocks_only_chips_without_it():
    # ascend-910's profile has no bfloat16; ascend-910b's has
    assert _severity(_judged("ascend-910"), "dtype-bfloat16") == {"blocks"}
    assert _severity(_judged("ascend-910b"), "dtype-bfloat16") == {"info"}
    assert _severity(_judged(), "dtype-bfloat16") == {"info"}  # no target: a note only


def test_float64_follows_the_profile_policy():
    assert _severity(_judged("biren-br104"), "dtype-float64") == {"blocks"}  # float64: refuse
    assert _severity(_judged("ascend-910b"), "dtype-float64") == {"port"}  # not native
    assert _severity(_judged("hygon-k100"), "dtype-float64") == {"info"}  # native


def test_nvidia_target_has_nothing_blocking():
    result = _judged("nvidia-h100")
    assert result.counts()["blocks"] == 0 and result.exit_code() == 0
    assert result.blocking_by_target == {"nvidia-h100": 0}


def test_vendor_stack_decides_torch_cuda_triton_and_nccl():
    ascend, hygon = _judged("ascend-910b"), _judged("hygon-k100")
    # torch_npu does not answer torch.cuda; DTK's ROCm-based torch does
    assert _severity(ascend, "cuda-synchronize") == {"port"}
    assert _severity(hygon, "cuda-synchronize") == {"info"}
    assert _severity(ascend, "nccl-backend") == {"port"}
    assert "HCCL" in next(f.target_note for f in ascend.findings if f.rule == "nccl-backend")
    # triton-ascend exists, so a Triton kernel is a port there; none known for Moore Threads
    assert _severity(ascend, "triton-kernel") == {"port"}
    assert _severity(_judged("mthreads-s4000"), "triton-kernel") == {"blocks"}
    # CUDA-only libraries block everywhere off NVIDIA
    assert _severity(hygon, "lib-flash-attn") == {"blocks"}


def test_family_takes_the_worst_chip_and_counts_each():
    result = _judged(family="npu")
    assert set(result.judged_against) == {"ascend-910", "ascend-910b", "ascend-310p"}
    assert _severity(result, "dtype-bfloat16") == {"blocks"}  # 910 and 310p lack bf16
    counts = result.blocking_by_target
    assert counts["ascend-910"] == counts["ascend-910b"] + 1  # the one bf16 use
    assert result.counts()["blocks"] == counts["ascend-910"]


def test_unknown_target_or_family_is_bad_input():
    with pytest.raises(AnychipError, match="unknown target 'tpu-v9'"):
        select("tpu-v9", None)
    with pytest.raises(AnychipError, match="unknown family 'tpu'"):
        select(None, "tpu")
