"""The `cuda` family on a CPU-only machine: every nvidia-* profile compiles, the emitted code is
for the profile's architecture, kernels respect the profile's limits, and run/verify refuse with
exit 3 before any CUDA code is loaded. `gpu`-marked tests verify on a real NVIDIA GPU."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

import anychip
from anychip.backends.cuda.backend import cubin_arch, ptx_arch
from anychip.backends.simt import CHIP_SCHEMA
from anychip.backends.simt.toolchains import cuda_device, nvcc
from anychip.compiler.backend import CompileOptions
from anychip.compiler.cli.main import main as cli
from anychip.compiler.errors import AnychipError, NotExecutable
from anychip.compiler.frontend import load_model
from anychip.compiler.importer import to_relax
from anychip.compiler.profiles import load_profile
from anychip.compiler.registry import get_backend, profiles

from tests.backends.gpu.onnx_models import make_softmax_mlp, squeezenet_path

CUDA_PROFILES = sorted(name for name, p in profiles().items() if p.family == "cuda")
HAS_NVCC = nvcc() is not None
NO_GPU = not cuda_device()[0]


@pytest.fixture(scope="module")
def softmax_mlp():
    return make_softmax_mlp()


class _CompiledOnDemand(dict):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def __missing__(self, name):
        self[name] = anychip.compile(self.model, target=name)
        return self[name]


@pytest.fixture(scope="module")
def compiled(softmax_mlp):
    """The softmax MLP compiled once per cuda profile, when a test first asks for it (nvcc
    makes each compile cost seconds: the fast lane compiles only the profiles it tests)."""
    return _CompiledOnDemand(softmax_mlp)


# Every profile in CI; the fast lane (-m "not slow") checks the two whose artifacts are
# reused below, the others are the same code with another arch.
FAST_PROFILES = ("nvidia-a100", "nvidia-h100")


def test_there_are_nvidia_profiles():
    assert {"nvidia-a100", "nvidia-h100", "nvidia-rtx4090"} <= set(CUDA_PROFILES)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST_PROFILES else
                                                pytest.mark.slow) for n in CUDA_PROFILES])
def test_every_profile_compiles_for_its_arch(compiled, name):
    art = compiled[name]
    arch = art.profile.target["arch"]
    files = {p.name: p for p in art.device_files()}
    source = files["kernels.cu"].read_text()
    kernels = re.findall(r'extern "C" __global__ void __launch_bounds__\((\d+)\) (\w+)\(', source)
    # TVM kernels only by default (dispatch to cuBLAS is opt-in: test_torch_dispatch.py)
    assert art.report.get("dispatch") is None and art.manifest["runtime"]["libraries"] == []
    assert len({k for _, k in kernels}) == art.report["kernels"] >= 1
    assert max(int(n) for n, _ in kernels) <= art.profile.target["max_threads_per_block"]
    assert "__shfl_down_sync" in source and ", 32);" in source  # warp-32 reductions
    assert art.report["precision_used"] == "fp32"
    if not HAS_NVCC:
        pytest.skip("nvcc is not installed: no PTX/cubin to check")
    assert ptx_arch(files[f"kernels.{arch}.ptx"].read_text()) == arch
    assert cubin_arch(files[f"kernels.{arch}.cubin"].read_bytes()) == arch
    assert art.report["device_code"]["cubin_arch"] == arch


def test_profiles_carry_the_hardware_table_arch():
    arch = {n: profiles()[n].target["arch"] for n in CUDA_PROFILES}
    assert arch["nvidia-a100"] == arch["nvidia-a800"] == "sm_80"
    assert arch["nvidia-h100"] == arch["nvidia-h800"] == arch["nvidia-h20"] == "sm_90"
    assert arch["nvidia-l20"] == arch["nvidia-rtx4090"] == "sm_89"


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is present: the exit-3 path does not apply")
def test_run_refuses_before_loading_cuda_code(compiled, monkeypatch):
    import tvm

    def no_load(*_args, **_kwargs):
        raise AssertionError("CUDA code was loaded")

    monkeypatch.setattr(tvm.runtime, "load_module", no_load)
    art = compiled["nvidia-h100"]
    assert art.execution().mode.value == "compiles-only"
    with pytest.raises(NotExecutable, match="no CUDA device: libcuda.so.1") as info:
        art.run()
    assert info.value.exit_code == 3


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is present: the exit-3 path does not apply")
def test_cli_run_and_verify_exit_3(compiled, tmp_path, capsys, softmax_mlp):
    import onnx

    saved = compiled["nvidia-a100"].save(tmp_path / "mlp.anychip")
    assert cli(["run", str(saved.path)]) == 3
    assert "no CUDA device" in capsys.readouterr().err
    model = tmp_path / "mlp.onnx"
    onnx.save(softmax_mlp, model)
    assert cli(["verify", str(model), "--target", "nvidia-l20"]) == 3
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("precision,used,marker", [("fp16", "fp16", "half"),
                                                   ("bf16", "bf16", "nv_bfloat16"),
                                                   ("tf32", "fp32", None)])
def test_precisions(softmax_mlp, precision, used, marker):
    """TVM's own kernels (dispatch=false); with the library, tf32 is really tf32."""
    art = anychip.compile(softmax_mlp, target="nvidia-a100", precision=precision,
                          dispatch=False)
    assert art.precision == used
    kernels = (art.path / "device" / "kernels.cu").read_text().split("__global__", 1)[1]
    if marker:
        assert marker in kernels
    else:
        assert "fp32 is used" in art.report["warnings"][0]


def _tvm_kernels_only(family: str) -> CompileOptions:
    """The matmuls stay TVM kernels (the cuda family sends them to cuBLAS by default)."""
    return CompileOptions(extra={"dispatch": False} if family == "cuda" else {})


def _small_profile(tmp_path, base: str, **target):
    raw = yaml.safe_load(profiles()[base].path.read_text())
    raw["name"] = f"{base}-small"
    raw["target"].update(target)
    raw["chip"].pop("max_dynamic_shared_memory_per_block", None)
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_profile(path, CHIP_SCHEMA)


@pytest.mark.parametrize("family", ["cuda", "gpu"])
def test_too_small_shared_memory_names_kernel_and_limit(tmp_path, softmax_mlp, family):
    base = sorted(n for n, p in profiles().items() if p.family == family)[0]
    profile = _small_profile(tmp_path, base, max_shared_memory_per_block=1024)
    mod = to_relax(load_model(softmax_mlp, None, {}))
    with pytest.raises(AnychipError, match=r"kernel '\w*matmul\w*' (declares|needs) \d+ B of "
                                           r".*shared memory.*max_shared_memory_per_block=1024"):
        get_backend(profile).lower(mod, profile, _tvm_kernels_only(family))


def test_too_few_threads_names_kernel_and_limit(tmp_path, softmax_mlp):
    profile = _small_profile(tmp_path, "nvidia-h100", max_num_threads=64,
                             max_threads_per_block=64)
    mod = to_relax(load_model(softmax_mlp, None, {}))
    options = _tvm_kernels_only("cuda")
    with pytest.raises(AnychipError, match=r"kernel '\w+' needs \d+ threads per block, over the "
                                           r"profile's limit max_threads_per_block=64"):
        get_backend(profile).lower(mod, profile, options)


@pytest.mark.slow   # a whole CNN through nvcc: minutes on 2 shared cores (281 s measured loaded)
def test_squeezenet_for_h100():
    art = anychip.compile(squeezenet_path(), target="nvidia-h100")
    report = art.report
    assert report["kernels"] >= 25
    assert 0 < report["max_shared_memory_bytes_used"] <= 49152
    assert report["max_threads_per_block_used"] <= 1024
    if HAS_NVCC:
        assert report["device_code"]["cubin_arch"] == "sm_90"


def test_doctor_reports_driver_nvcc_and_bindings():
    facts = {f["name"]: f for f in get_backend(profiles()["nvidia-h100"]).doctor()}
    assert set(facts) == {"CUDA driver", "nvcc", "cuda-bindings"}
    assert facts["nvcc"]["found"] == HAS_NVCC
    assert facts["CUDA driver"]["found"] == (not NO_GPU)


# ---- on a machine with an NVIDIA GPU (skipped elsewhere with the reason) ----

def _zoo_names() -> list[str]:
    try:
        from anychip import models

        return list(models.names())
    except (ImportError, AttributeError):
        return []


@pytest.mark.runs_on("cuda")
@pytest.mark.parametrize("model", _zoo_names() or ["zoo:(zoo not built)"])
def test_zoo_model_verifies_on_h100(model):
    if model.startswith("zoo:("):
        pytest.skip("the model zoo (anychip.models.names) is not available")
    report = anychip.verify(f"zoo:{model}", target="nvidia-h100")
    assert report.passed, report.summary()


@pytest.mark.runs_on("cuda")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
def test_precisions_verify_on_h100(precision):
    report = anychip.verify(make_softmax_mlp(), target="nvidia-h100", precision=precision)
    assert report.passed, report.summary()


@pytest.mark.runs_on("cuda")
def test_squeezenet_verifies_on_h100_from_saved_artifact(tmp_path):
    art = anychip.compile(squeezenet_path(), target="nvidia-h100").save(tmp_path / "sq.anychip")
    loaded = anychip.load(art.path)
    out = loaded.run(seed=1)
    assert all(np.isfinite(v).all() for v in out.values())

