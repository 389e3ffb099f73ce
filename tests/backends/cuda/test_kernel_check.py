"""CUDA kernels executed one by one on an NVIDIA GPU against the host build (gpu-marked), and
the refusal without a GPU (everywhere else)."""

from __future__ import annotations

import pytest

from anychip.backends.cuda import kernel_check
from anychip.backends.simt.toolchains import cuda_device
from anychip.compiler.cli.main import main as cli


@pytest.mark.skipif(cuda_device()[0], reason="a CUDA device is present: the refusal path "
                                             "cannot be exercised here")
def test_without_a_gpu_the_kernel_check_exits_3_with_the_reason(capsys):
    rc = cli(["verify", "zoo:mlp", "--target", "nvidia-h100", "--kernels"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "NVIDIA GPU" in err and "libcuda" in err and "Traceback" not in err


@pytest.mark.runs_on("cuda")
@pytest.mark.parametrize("model", ["zoo:mlp", "zoo:gpt2", "zoo:llama"])
def test_every_cuda_kernel_matches_the_host_build(model):
    """Warp-32 reductions (shuffles) run here and nowhere else."""
    report = kernel_check.run_kernels(model, "nvidia-h100")
    failed = [f"{k.function}: {k.detail}" for k in report.kernels if k.status == "failed"]
    assert report.passed, report.summary() + "\n" + "\n".join(failed[:10])
    assert report.counts()["passed"] >= 3
