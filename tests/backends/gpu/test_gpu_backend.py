"""The `gpu` family (domestic GPUs): every profile compiles, the emitted code carries the
profile's dialect and warp size (wave64 for Hygon), the generated source passes a real compiler
where one is installed, float64 follows the profile, and run refuses with exit 3."""

from __future__ import annotations

import re
import warnings

import pytest
import yaml
from onnx import TensorProto

import anychip
from anychip.backends.gpu.dialects import describe_amdgpu_elf, hip_toolchain, widen_lane_masks
from anychip.backends.simt import CHIP_SCHEMA
from anychip.backends.simt.opencl import clang_for_opencl, opencl_device
from anychip.backends.simt.toolchains import nvcc
from anychip.compiler.backend import CompileOptions
from anychip.compiler.cli.main import main as cli
from anychip.compiler.errors import AnychipError, NotExecutable
from anychip.compiler.frontend import load_model
from anychip.compiler.importer import to_relax
from anychip.compiler.profiles import load_profile
from anychip.compiler.registry import get_backend, profiles

from tests.backends.gpu.onnx_models import make_float64_model, make_softmax_mlp, squeezenet_path

GPU_PROFILES = sorted(name for name, p in profiles().items() if p.family == "gpu")


def dialect(name: str) -> str:
    return profiles()[name].chip["dialect"]


def needs_toolchain(name: str) -> None:
    if dialect(name) == "hip" and not hip_toolchain()[0]:
        pytest.skip(f"HIP codegen unavailable here: {hip_toolchain()[1]}")


class _CompiledOnDemand(dict):
    def __missing__(self, name):
        self[name] = anychip.compile(make_softmax_mlp(), target=name)
        return self[name]


@pytest.fixture(scope="module")
def compiled():
    """The softmax MLP compiled once per gpu profile, when a test first asks for it (tests
    call needs_toolchain first, so a HIP profile is not compiled where it cannot be)."""
    return _CompiledOnDemand()


# Every profile in CI; the fast lane (-m "not slow") takes one per dialect family: OpenCL,
# a CUDA-compatible dialect (nvcc-checked) and HIP.
FAST_PROFILES = ("biren-br104", "mthreads-s4000", "hygon-k100")
PROFILE_PARAMS = [pytest.param(n, marks=() if n in FAST_PROFILES else pytest.mark.slow)
                  for n in GPU_PROFILES]


def test_the_domestic_profiles_are_there():
    assert {"hygon-k100", "hygon-z100", "mthreads-s4000", "metax-c500", "iluvatar-bi-v150",
            "biren-br104"} <= set(GPU_PROFILES)


@pytest.mark.parametrize("name", PROFILE_PARAMS)
def test_every_profile_compiles_with_its_warp_size(compiled, name):
    needs_toolchain(name)
    art = compiled[name]
    warp = art.profile.target["thread_warp_size"]
    files = {p.name: p.read_bytes() for p in art.device_files()}
    facts = art.report["device_code"]
    assert facts["dialect"] == dialect(name) and facts["warp_size"] == warp
    if dialect(name) in ("musa", "maca", "corex"):
        source = files["kernels.cu"].decode()
        widths = set(re.findall(r"__shfl_down_sync\([^,]+, [^,]+, \d+, (\d+)\)", source))
        assert widths == {str(warp)}, widths
        mask_type = "unsigned long long" if art.profile.chip.get("lane_mask_bits") == 64 else "uint"
        assert re.search(rf"\b{mask_type} mask\w*\[1\];", source)
        assert not re.search(r"\buint mask\w*\[1\];", source) or mask_type == "uint"
    elif dialect(name) == "hip":
        mcpu = art.profile.target["mcpu"]
        asm = files[f"kernels.{mcpu}.s"].decode()
        assert warp == 64
        assert len(re.findall(r"\.wavefront_size:\s+64", asm)) == art.report["kernels"]
        assert ".wavefront_size:     32" not in asm
        assert describe_amdgpu_elf(files[f"kernels.{mcpu}.hsaco"])["mcpu"] == mcpu
        assert f'"target-cpu"="{mcpu}"' in files[f"kernels.{mcpu}.ll"].decode()
    else:
        assert "__kernel void" in files["kernels.cl"].decode()


@pytest.mark.parametrize("name", PROFILE_PARAMS)
def test_generated_source_passed_a_real_compiler(compiled, name):
    needs_toolchain(name)
    checked = compiled[name].report["device_code"]["checked_by"]
    kind = dialect(name)
    if kind in ("musa", "maca", "corex"):
        if nvcc() is None:
            pytest.skip("nvcc is not installed: CUDA-compatible source unchecked")
        assert checked.startswith("nvcc ")
    elif kind == "opencl":
        if opencl_device() is None and clang_for_opencl() is None:
            pytest.skip("no OpenCL platform or clang here (Debian: pocl-opencl-icd)")
        assert "Portable Computing Language" in checked or "clang" in checked
        if opencl_device() is not None:
            assert any(p.name.endswith(".bin") for p in compiled[name].device_files())
    else:
        assert "ld.lld" in checked


@pytest.mark.parametrize("name", PROFILE_PARAMS)
def test_run_exits_3_with_the_reason(compiled, name):
    needs_toolchain(name)
    art = compiled[name]
    assert art.execution().mode.value == "compiles-only"
    with pytest.raises(NotExecutable, match="cannot run here: no .* device or runtime here") as e:
        art.run()
    assert e.value.exit_code == 3


def test_cli_compile_then_run_exits_3(tmp_path, capsys):
    import onnx

    model = tmp_path / "mlp.onnx"
    onnx.save(make_softmax_mlp(), model)
    out = tmp_path / "mlp.anychip"
    assert cli(["compile", str(model), "--target", "metax-c500", "-o", str(out)]) == 0
    assert (out / "device" / "kernels.cu").exists()
    assert cli(["run", str(out)]) == 3
    assert "no MetaX MACA device" in capsys.readouterr().err


def test_widen_lane_masks_only_touches_mask_declarations():
    source = "alignas(64) uint mask_ptr[1];\nuint other[1];\nalignas(64) uint mask_ptr_1[1];"
    widened, count = widen_lane_masks(source)
    assert count == 2 and "uint other[1];" in widened
    assert widened.count("unsigned long long mask_ptr") == 2


def test_hygon_squeezenet_is_wave64_gfx906():
    needs_toolchain("hygon-k100")
    art = anychip.compile(squeezenet_path(), target="hygon-k100")
    facts = art.report["device_code"]
    assert facts["kernels_wave64"] == art.report["kernels"] >= 25 and facts["kernels_wave32"] == 0
    assert facts["code_object"] == {**facts["code_object"], "valid": True, "mcpu": "gfx906"}


# ---- float64 on chips without it ----

def _profile_copy(tmp_path, base: str, **fields):
    raw = yaml.safe_load(profiles()[base].path.read_text())
    raw.update(fields, name=f"{base}-copy")
    path = tmp_path / f"{base}-copy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_profile(path, CHIP_SCHEMA)


def test_biren_refuses_float64():
    assert profiles()["biren-br104"].raw["float64"] == "refuse"
    with pytest.raises(AnychipError, match="no float64 units .* export the model in float32"):
        anychip.compile(make_float64_model(), target="biren-br104")


def test_float64_lowered_with_a_warning(tmp_path):
    profile = _profile_copy(tmp_path, "biren-br104", float64="lower-with-warning")
    backend = get_backend(profile)
    mod = to_relax(load_model(make_float64_model(), None, {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = backend.context(profile, CompileOptions())
        result = backend.build(backend.lower(mod, profile, CompileOptions(), ctx), profile,
                               CompileOptions(), ctx)
    assert any("computed in float32" in str(w.message) for w in caught)
    assert result.report["warnings"]
    assert "double" not in result.device_sources["kernels.cl"].decode()


def test_float64_inputs_are_refused_even_when_lowering(tmp_path):
    profile = _profile_copy(tmp_path, "biren-br104", float64="lower-with-warning")
    mod = to_relax(load_model(make_float64_model(TensorProto.DOUBLE), None, {}))
    with pytest.raises(AnychipError, match="float64 \\(input 'x'\\)"):
        get_backend(profile).lower(mod, profile, CompileOptions())


def test_opencl_fp16_is_checked_even_without_device_half_support():
    if clang_for_opencl() is None and opencl_device() is None:
        pytest.skip("no OpenCL platform or clang here")
    art = anychip.compile(make_softmax_mlp(), target="biren-br104", precision="fp16")
    assert art.precision == "fp16"
    assert "half" in (art.path / "device" / "kernels.cl").read_text()
    assert art.report["device_code"]["checked_by"]


def test_doctor_names_the_checkers():
    names = {f["name"] for f in get_backend(profiles()["biren-br104"]).doctor()}
    assert names == {"HIP (Hygon) codegen", "OpenCL platform", "nvcc (CUDA-compatible dialects)"}
