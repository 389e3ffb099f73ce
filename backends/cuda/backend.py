"""NVIDIA backend: TVM's CUDA codegen, compiled ahead of time with nvcc where it is installed.

The TVM executable (lib.so) holds CUDA C++ source, which TVM compiles when the artifact is
loaded on a GPU host (NVRTC through cuda-bindings, or nvcc). Where nvcc is installed at build
time, device/ also gets PTX for the profile's architecture and, with ptxas, a cubin; the runner
then loads those instead of compiling, so the GPU host needs only the driver.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from anychip.backends.simt import CHIP_SCHEMA, GpuChip, lower_for_gpu, relax_build
from anychip.backends.simt.device_code import device_source
from anychip.backends.simt.toolchains import cuda_device, nvcc, nvcc_compile
from anychip.compiler.backend import (BuildResult, CompileContext, CompileOptions, Execution,
                                      FamilyOptions, Mode, OptionalBackendHooks, option)
from anychip.compiler.errors import AnychipError, NotExecutable
from anychip.compiler.profiles import Profile


def cubin_arch(data: bytes) -> str | None:
    """'sm_90' from a cubin's ELF header (e_machine 190 = EM_CUDA; SM number in e_flags)."""
    if data[:4] != b"\x7fELF" or int.from_bytes(data[18:20], "little") != 190:
        return None
    flags = int.from_bytes(data[48:52], "little")
    return f"sm_{(flags >> 8) & 0xFF}"


def ptx_arch(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(".target"):
            return line.split()[1].rstrip(",")
    return None


def ptxas_compile(ptx: bytes, arch: str, label: str) -> bytes | None:
    """PTX -> cubin with ptxas (shipped with nvcc); None when ptxas is absent."""
    tool = nvcc()
    ptxas = shutil.which("ptxas") or (str(Path(tool.path).parent / "ptxas") if tool else None)
    if not ptxas or not Path(ptxas).exists():
        return None
    with tempfile.TemporaryDirectory(prefix="anychip-ptxas-") as tmp:
        src, out = Path(tmp) / "kernels.ptx", Path(tmp) / "kernels.cubin"
        src.write_bytes(ptx)
        proc = subprocess.run([ptxas, f"-arch={arch}", "-O3", str(src), "-o", str(out)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise AnychipError(f"{label}: ptxas rejected the PTX for {arch}: "
                               f"{(proc.stderr.strip().splitlines() or ['?'])[0][:300]}")
        return out.read_bytes()


def compile_device_code(source: str, arch: str, what: str, label: str) -> tuple[dict, dict]:
    """nvcc (and ptxas) ahead of time: ({file name: bytes}, report facts)."""
    tool = nvcc()
    if what == "none" or tool is None:
        why = "disabled by the profile" if tool else "nvcc is not installed"
        return {}, {"ahead_of_time": f"none ({why}); the GPU host compiles kernels.cu on load"}
    started = time.perf_counter()
    ptx = nvcc_compile(source, arch, "ptx", label)
    files = {f"kernels.{arch}.ptx": ptx}
    facts = {"nvcc": tool.version, "ptx_target": ptx_arch(ptx.decode(errors="replace"))}
    if what == "cubin":
        cubin = ptxas_compile(ptx, arch, label)
        if cubin is not None:
            files[f"kernels.{arch}.cubin"] = cubin
            facts["cubin_arch"] = cubin_arch(cubin)
    facts["seconds"] = round(time.perf_counter() - started, 2)
    for key in ("ptx_target", "cubin_arch"):
        if key in facts and facts[key] != arch:
            raise AnychipError(f"{label}: nvcc produced {key} {facts[key]}, not the profile's "
                               f"{arch}; check the nvcc installation.")
    return files, facts


@dataclass(frozen=True)
class CudaOptions(FamilyOptions):
    """The cuda family's options: library dispatch through a torch device plug-in."""

    # Off by default until a GPU session has run it: the library path is built and tested on
    # the host with a stand-in plug-in, but has not executed on a CUDA device yet, while the TVM
    # kernels verified all 15 zoo models on an H100 and an H200 (docs/gpu.md).
    dispatch: bool = option(False, "send conv2d and matmul (dense, batched) and attention to "
                                   "cuBLAS/cuDNN/SDPA through torch (the artifact then needs "
                                   "torch with CUDA on the GPU host; not yet run on a GPU)",
                            metavar="BOOL")
    torch_plugin: str = option("torch:cuda", "the torch device plug-in (module:device) whose "
                                             "libraries dispatch uses", metavar="MODULE:DEVICE")
    cuda_graph: bool = option(False, "capture static runs of TVM kernels as CUDA graphs "
                                     "(Relax's RewriteCUDAGraph; for launch-bound models)",
                              metavar="BOOL")


def dispatch_library(opts, precision: str):
    """The Library a compile with these options dispatches to (None when dispatch is off)."""
    if not opts.dispatch:
        return None
    if opts.cuda_graph:
        raise AnychipError("cuda_graph=true captures TVM's kernels only: combine it with "
                           "dispatch=false (library calls through torch cannot be captured "
                           "safely, docs/gpu.md).")
    from anychip.compiler.dispatch import get_library
    from anychip.compiler.dispatch.torch_device import library_name

    return get_library(library_name(opts.torch_plugin)).with_precision(precision)


def _execution_dict(execution: Execution) -> dict:
    return {"mode": execution.mode.value, "why": execution.why}


class CudaBackend(OptionalBackendHooks):
    """Family `cuda`: every nvidia-* profile. Executes where a CUDA device is present."""

    family = "cuda"
    chip_schema = CHIP_SCHEMA
    Options = CudaOptions

    def target(self, profile: Profile):
        return GpuChip.from_profile(profile).target()

    def execution(self, profile: Profile) -> Execution:
        present, why = cuda_device()
        if present:
            return Execution(Mode.EXECUTES, f"{why}; TVM CUDA runtime")
        tool = nvcc()
        compiles = (f"; nvcc {tool.version} compiles PTX/cubin for "
                    f"{profile.target.get('arch')} here" if tool else "")
        return Execution(Mode.COMPILES_ONLY, why + compiles)

    def lower(self, mod, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None):
        chip = GpuChip.from_profile(profile)
        ctx = ctx or self.context(profile, options)
        precision = options.precision or profile.default_precision
        lowered, report = lower_for_gpu(mod, profile, chip, precision,
                                        dispatch_library(ctx.options, precision))
        ctx.report.update(report)
        return lowered

    def build(self, mod, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None) -> BuildResult:
        chip = GpuChip.from_profile(profile)
        ctx = ctx or self.context(profile, options)
        if "precision_used" not in ctx.report:      # a module that was not lowered yet
            mod = self.lower(mod, profile, options, ctx)
        report = dict(ctx.report)
        started = time.perf_counter()
        from .runner import install_compile_hook

        # On a host with a CUDA driver TVM compiles the kernels during the build, through this
        # callback: nvcc without fast math, as below, rather than TVM's NVRTC with fast math.
        install_compile_hook()
        executable = relax_build(mod, chip, cuda_graph=ctx.options.cuda_graph)
        source = device_source(executable, "cuda")
        report["timings_s"]["codegen"] = round(time.perf_counter() - started, 3)
        arch = chip.target_attrs["arch"]
        label = f"target '{profile.name}'"
        files, facts = compile_device_code(source, arch, profile.chip.get("device_binary", "cubin"),
                                           label)
        files["kernels.cu"] = source.encode()
        report.update({"dialect": "cuda", "arch": arch, "device_code": facts,
                       "kernels_cu_sha256": hashlib.sha256(source.encode()).hexdigest()})
        libraries = [report["dispatch"]["library"]] if (report.get("dispatch") or {}).get(
            "total") else []
        return BuildResult(executable=executable, precision=report["precision_used"],
                           device_sources=files, report=report,
                           runtime={"device": "cuda", "arch": arch, "libraries": libraries,
                                    "kernels_cu_sha256": report["kernels_cu_sha256"],
                                    "execution_where_built": _execution_dict(
                                        self.execution(profile))})

    def runner(self, artifact):
        present, why = cuda_device()
        if not present:
            raise NotExecutable(f"target '{artifact.target}' cannot run here: {why}. Run the "
                                f"artifact on a host with an NVIDIA GPU and driver.")
        from .runner import CudaRunner

        return CudaRunner(artifact, self.execution(artifact.profile))

    def bench_device(self, profile: Profile) -> str:
        return "cuda" if cuda_device()[0] else "cpu"

    def execute_kernels(self, model, target: str, precision: str | None = None,
                        shapes: dict | None = None, dims: dict | None = None):
        """Each kernel on its own on this GPU against the host build (kernel_check)."""
        from .kernel_check import run_kernels

        return run_kernels(model, target, precision=precision, shapes=shapes, dims=dims)

    def doctor(self) -> list[dict]:
        from .runner import cuda_bindings_version

        present, why = cuda_device()
        tool = nvcc()
        bindings = cuda_bindings_version()
        return [
            {"name": "CUDA driver", "found": present, "version": None, "detail": why},
            {"name": "nvcc", "found": tool is not None, "version": tool.version if tool else None,
             "detail": (f"{tool.path}: PTX and cubin compiled ahead of time" if tool else
                        "install the CUDA toolkit to save PTX/cubin in artifacts")},
            {"name": "cuda-bindings", "found": bindings is not None, "version": bindings,
             "detail": ("NVRTC for compiling kernels.cu on the GPU host" if bindings else
                        "pip install cuda-bindings on a GPU host without nvcc-built artifacts")},
        ]
