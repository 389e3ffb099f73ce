"""Domestic GPU backend (family `gpu`): compile-verified here, deployable as a TVM module.

Every profile names its dialect (chip.dialect); the shared GPU lowering schedules kernels
under the profile's warp size, threads and shared memory, and dialects.py emits and checks the
code. No domestic GPU runtime exists on this machine, so execution() says compiles-only and
why; a CUDA-compatible profile with warp 32 runs on an NVIDIA GPU where one is present.
"""

from __future__ import annotations

import time

from anychip.backends.host.vm_runner import VmRunner
from anychip.backends.simt import CHIP_SCHEMA, GpuChip, lower_for_gpu
from anychip.backends.simt.opencl import opencl_device
from anychip.backends.simt.toolchains import cuda_device, nvcc
from anychip.compiler.backend import (BuildResult, CompileContext, CompileOptions, Execution,
                                      Mode, OptionalBackendHooks)
from anychip.compiler.errors import NotExecutable
from anychip.compiler.profiles import Profile

from .dialects import BUILDERS, CUDA_LIKE, DEVICE_RUNTIME, hip_toolchain


def _checker(dialect: str) -> str:
    if dialect in CUDA_LIKE:
        tool = nvcc()
        return f"source checked by nvcc {tool.version}" if tool else "nvcc absent: source unchecked"
    if dialect == "hip":
        return hip_toolchain()[1]
    device = opencl_device()
    return f"OpenCL C built by {device.platform}" if device else "no OpenCL platform: unchecked"


def _execution_dict(execution: Execution) -> dict:
    return {"mode": execution.mode.value, "why": execution.why}


class GpuBackend(OptionalBackendHooks):
    family = "gpu"
    chip_schema = CHIP_SCHEMA

    def target(self, profile: Profile):
        return GpuChip.from_profile(profile).target()

    def _runs_on_nvidia(self, chip: GpuChip) -> bool:
        return chip.dialect in CUDA_LIKE and chip.warp_size == 32 and cuda_device()[0]

    def execution(self, profile: Profile) -> Execution:
        chip = GpuChip.from_profile(profile)
        if self._runs_on_nvidia(chip):
            return Execution(Mode.EXECUTES, f"warp-32 CUDA-compatible code on this host's NVIDIA "
                                            f"GPU ({cuda_device()[1]})")
        if chip.dialect == "hip":
            ok, why = hip_toolchain()
            if not ok:
                return Execution(Mode.UNAVAILABLE, why)
        return Execution(Mode.COMPILES_ONLY,
                         f"no {DEVICE_RUNTIME[chip.dialect]} device or runtime here; "
                         f"{_checker(chip.dialect)}")

    def lower(self, mod, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None):
        chip = GpuChip.from_profile(profile)
        lowered, report = lower_for_gpu(mod, profile, chip,
                                        options.precision or profile.default_precision)
        (ctx or self.context(profile, options)).report.update(report)
        return lowered

    def build(self, mod, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None) -> BuildResult:
        chip = GpuChip.from_profile(profile)
        ctx = ctx or self.context(profile, options)
        if "precision_used" not in ctx.report:      # a module that was not lowered yet
            mod = self.lower(mod, profile, options, ctx)
        report = dict(ctx.report)
        started = time.perf_counter()
        executable, files, facts = BUILDERS[chip.dialect](mod, chip, profile,
                                                          f"target '{profile.name}'")
        report["timings_s"]["codegen_and_check"] = round(time.perf_counter() - started, 3)
        report["device_code"] = facts
        device = "cuda" if chip.dialect in CUDA_LIKE else ("rocm" if chip.dialect == "hip"
                                                           else "opencl")
        return BuildResult(executable=executable, precision=report["precision_used"],
                           device_sources=files, report=report,
                           runtime={"device": device, "dialect": chip.dialect,
                                    "warp_size": chip.warp_size,
                                    "execution_where_built": _execution_dict(
                                        self.execution(profile))})

    def runner(self, artifact):
        chip = GpuChip.from_profile(artifact.profile)
        if self._runs_on_nvidia(chip):
            return VmRunner(artifact, "cuda", self.execution(artifact.profile))
        why = self.execution(artifact.profile).why
        raise NotExecutable(f"target '{artifact.target}' cannot run here: {why}. Deploy the "
                            f"artifact's lib.so with a TVM runtime built for the device.")

    def bench_device(self, profile: Profile) -> str:
        """Warp-32 CUDA-compatible profiles run on an NVIDIA GPU here when one is present."""
        return "cuda" if self._runs_on_nvidia(GpuChip.from_profile(profile)) else "cpu"

    def execute_kernels(self, model, target: str, precision: str | None = None,
                        shapes: dict | None = None, dims: dict | None = None):
        """OpenCL-dialect profiles: each kernel on this machine's OpenCL device (kernel_run)."""
        from .kernel_run import run_kernels

        return run_kernels(model, target, precision=precision, shapes=shapes, dims=dims)

    def doctor(self) -> list[dict]:
        ok, why = hip_toolchain()
        device = opencl_device()
        tool = nvcc()
        return [
            {"name": "HIP (Hygon) codegen", "found": ok, "version": None, "detail": why},
            {"name": "OpenCL platform", "found": device is not None,
             "version": device.version if device else None,
             "detail": (f"{device.platform} builds OpenCL C on {device.device}" if device else
                        "apt-get install pocl-opencl-icd to check OpenCL C")},
            {"name": "nvcc (CUDA-compatible dialects)", "found": tool is not None,
             "version": tool.version if tool else None,
             "detail": "checks MUSA/MACA/CoreX source as CUDA C++" if tool else "not installed"},
        ]
