"""OpenCL kernels executed for real on this machine's OpenCL device (PoCL), one by one, against
the same functions built for the host; a wrong launch must fail the check."""

from __future__ import annotations

import pytest

from anychip.backends.gpu import kernel_run
from anychip.compiler.cli.main import main as cli
from anychip.compiler.errors import AnychipError, NotExecutable
from anychip.compiler.registry import profiles

OPENCL_PROFILES = sorted(name for name, p in profiles().items()
                         if p.family == "gpu" and p.chip.get("dialect") == "opencl")


def _need_device() -> None:
    pytest.importorskip("pyopencl", reason="pyopencl is not installed")
    try:
        kernel_run._opencl()
    except NotExecutable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("target", OPENCL_PROFILES)
# the two CNNs run every kernel on PoCL (~95 s each on 2 loaded cores): slow, still in CI
@pytest.mark.parametrize("model", ["zoo:mlp",
                                   pytest.param("zoo:squeezenet", marks=pytest.mark.slow),
                                   pytest.param("zoo:shufflenet", marks=pytest.mark.slow)])
def test_every_kernel_runs_on_the_opencl_device_and_matches(model, target):
    """shufflenet: its grouped 1x1 conv + batch norm kernels computed wrong values under
    dlight's gpu.Reduction rule (thread-private results read by other threads)."""
    _need_device()
    report = kernel_run.run_kernels(model, target)
    counts = report.counts()
    assert report.passed, report.summary()
    assert counts["passed"] >= 3 and counts["failed"] == 0
    assert report.how.startswith("executed")
    ran = [k for k in report.kernels if k.status == "passed"]
    assert all(k.block and k.grid for k in ran)   # each one launched with its bound grid


def test_a_wrong_launch_is_caught(monkeypatch):
    """Half the threads in x: the kernel leaves part of its output unwritten, and the
    comparison with the host build must say so."""
    _need_device()
    real = kernel_run._device_kernels

    def half_the_threads(*args):
        kernels = real(*args)
        return [(name, params, {**extents, "threadIdx.x": str(max(1, int(extents.get(
            "threadIdx.x", "1")) // 2))}, source) for name, params, extents, source in kernels]

    monkeypatch.setattr(kernel_run, "_device_kernels", half_the_threads)
    report = kernel_run.run_kernels("zoo:mlp", OPENCL_PROFILES[0])
    assert not report.passed
    assert report.counts()["failed"] >= 1
    assert any("outside" in k.detail for k in report.kernels if k.status == "failed")


def test_cli_kernels_flag(capsys):
    _need_device()
    assert cli(["verify", "zoo:mlp", "--target", OPENCL_PROFILES[0], "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "executed on" in out and "whole model did not run" in out


def test_non_opencl_targets_are_refused():
    with pytest.raises(AnychipError, match="does not emit OpenCL C"):
        kernel_run.run_kernels("zoo:mlp", "hygon-k100")


@pytest.mark.slow   # ~10 s on 2 shared cores
def test_kernels_of_a_dynamic_model_run_at_a_concrete_shape(tmp_path):
    """Compiled once with symbolic extents, checked at one shape (issue 16): every kernel of a
    model with symbolic batch and sequence dims executes, none is skipped as dynamic."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _need_device()
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W", (16, 8)), ("g", (8,)), ("b", (8,)))]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Softmax", ["h"], ["s"], axis=-1),
             helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])], inits)
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    report = kernel_run.run_kernels(str(path), OPENCL_PROFILES[0])
    counts = report.counts()
    assert report.passed and counts["skipped"] == 0 and counts["passed"] >= 2, report.summary()
    assert "symbolic kernels run at batch=3, seq=3" in report.summary()
