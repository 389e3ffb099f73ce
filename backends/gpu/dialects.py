"""Per-dialect code generation and checking for the domestic GPU profiles.

Each dialect turns a lowered Relax module into (executable, device files, facts):
- CUDA-compatible (musa, maca, corex): TVM's CUDA codegen with the chip's warp size; where the
  toolchain's lane mask is 64 bits (MetaX MACA: `0xffffffffffffffff` masks in its ports), the
  generated `uint` warp-mask variables are widened before the source is embedded. nvcc, where
  installed, checks the source as CUDA C++ (the vendor compilers accept CUDA C++; not run here).
- hip (Hygon DCU): TVM's ROCm target, LLVM AMDGPU wave64, linked with ld.lld against ROCm
  device libraries into a code object; device/ keeps LLVM IR, assembly and the code object.
- opencl: TVM's OpenCL codegen; the machine's OpenCL compiler (PoCL) builds the source.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time

from anychip.backends.simt import GpuChip, relax_build
from anychip.backends.simt.device_code import capture_rocm_link, device_modules, device_source
from anychip.backends.simt.opencl import (build_opencl, clang_check_opencl, clang_for_opencl,
                                          opencl_device)
from anychip.backends.simt.toolchains import (lld_for_tvm, llvm_major, nvcc, nvcc_compile,
                                              rocm_bitcode_dir)
from anychip.compiler.errors import AnychipError

CUDA_LIKE = {"musa", "maca", "corex", "cuda"}

# What runs each dialect's code on real hardware (named in "compiles only" reasons).
DEVICE_RUNTIME = {"musa": "Moore Threads MUSA", "maca": "MetaX MACA", "corex": "Iluvatar CoreX",
                  "hip": "Hygon DTK (HIP)", "opencl": "vendor OpenCL", "cuda": "NVIDIA CUDA"}

_MASK_DECL = re.compile(r"\buint (mask\w*\[\d+\];)")
_POSTPROC_LOCK = threading.Lock()


def widen_lane_masks(source: str) -> tuple[str, int]:
    """`uint mask...[1];` -> `unsigned long long mask...[1];` (64-lane warps)."""
    return _MASK_DECL.subn(r"unsigned long long \1", source)


@contextlib.contextmanager
def cuda_source_postproc(transform):
    """Let `transform(source) -> source` rewrite CUDA code before TVM embeds it (TVM calls the
    process-wide `tvm_callback_cuda_postproc` on every generated CUDA module)."""
    import tvm
    import tvm_ffi

    name = "tvm_callback_cuda_postproc"
    with _POSTPROC_LOCK:
        previous = tvm.get_global_func(name, allow_missing=True)
        tvm_ffi.register_global_func(name, lambda code, *_: transform(str(code)), override=True)
        try:
            yield
        finally:
            if previous is not None:
                tvm_ffi.register_global_func(name, previous, override=True)
            else:
                tvm_ffi.register_global_func(name, lambda code, *_: code, override=True)


def build_cuda_like(mod, chip: GpuChip, profile, label: str):
    widened = []

    def adapt(source: str) -> str:
        if chip.lane_mask_bits == 64:
            source, count = widen_lane_masks(source)
            widened.append(count)
        header = (f"// anychip: {chip.dialect} dialect for {profile.name}: CUDA C++ from TVM's "
                  f"CUDA codegen, warp size {chip.warp_size}, lane mask {chip.lane_mask_bits} "
                  f"bits\n")
        return header + source

    with cuda_source_postproc(adapt):
        executable = relax_build(mod, chip)
    source = device_source(executable, "cuda")
    facts = {"dialect": chip.dialect, "warp_size": chip.warp_size,
             "lane_mask_bits": chip.lane_mask_bits, "masks_widened": sum(widened)}
    tool, arch = nvcc(), profile.chip.get("nvcc_check_arch", "sm_80")
    if tool is not None:
        started = time.perf_counter()
        nvcc_compile(source, arch, "ptx", label)
        facts["checked_by"] = (f"nvcc {tool.version} (CUDA C++ for {arch}, "
                               f"{time.perf_counter() - started:.1f} s)")
    else:
        facts["checked_by"] = "nobody: nvcc is not installed"
    facts["vendor_compiler"] = (f"not run: the {DEVICE_RUNTIME[chip.dialect]} toolchain is not "
                                f"installed here")
    return executable, {"kernels.cu": source.encode()}, facts


def hip_toolchain() -> tuple[bool, str]:
    lld, bitcode = lld_for_tvm(), rocm_bitcode_dir()
    if lld is None:
        return False, (f"no ld.lld {llvm_major()} or newer to link AMDGPU code objects "
                       f"(Debian: apt-get install lld-{llvm_major()})")
    if bitcode is None:
        return False, "no ROCm device libraries (Debian: apt-get install rocm-device-libs)"
    return True, f"TVM ROCm codegen (LLVM {llvm_major()}) + ld.lld {lld.version} + ROCm device libs"


def build_hip(mod, chip: GpuChip, profile, label: str):
    ok, why = hip_toolchain()
    if not ok:
        raise AnychipError(f"{label}: cannot build Hygon code here: {why}.")
    mcpu = chip.target_attrs.get("mcpu", "gfx906")
    with capture_rocm_link(lld_for_tvm().path, rocm_bitcode_dir(), mcpu) as code_objects:
        executable = relax_build(mod, chip)
    modules = [m for m in device_modules(executable) if m.kind == "hip"]
    if not modules or not code_objects:
        raise AnychipError(f"{label}: TVM's ROCm codegen produced no code object.")
    llvm_ir, asm = modules[0].inspect_source("llvm"), modules[0].inspect_source("asm")
    hsaco = code_objects[-1]
    facts = {"dialect": "hip", "mcpu": mcpu, "warp_size": chip.warp_size,
             "code_object": describe_amdgpu_elf(hsaco),
             "kernels_wave64": len(re.findall(r"\.wavefront_size:\s+64", asm)),
             "kernels_wave32": len(re.findall(r"\.wavefront_size:\s+32", asm)),
             "checked_by": why,
             "vendor_compiler": "not run: Hygon DTK is not installed here"}
    if facts["code_object"].get("mcpu") != mcpu:
        raise AnychipError(f"{label}: the code object is for {facts['code_object'].get('mcpu')}, "
                           f"not the profile's {mcpu}.")
    files = {f"kernels.{mcpu}.ll": llvm_ir.encode(), f"kernels.{mcpu}.s": asm.encode(),
             f"kernels.{mcpu}.hsaco": hsaco}
    return executable, files, facts


# e_flags & 0xff of an AMDGPU ELF (LLVM's EF_AMDGPU_MACH_*), for the ISAs Hygon parts derive from.
_AMDGPU_MACH = {0x2C: "gfx900", 0x2D: "gfx902", 0x2E: "gfx904", 0x2F: "gfx906", 0x30: "gfx908",
                0x3F: "gfx90a", 0x40: "gfx940", 0x4C: "gfx942"}


def describe_amdgpu_elf(data: bytes) -> dict:
    if data[:4] != b"\x7fELF":
        return {"valid": False}
    machine = int.from_bytes(data[18:20], "little")
    flags = int.from_bytes(data[48:52], "little")
    return {"valid": machine == 224, "e_machine": machine, "abi_version": data[8],
            "mcpu": _AMDGPU_MACH.get(flags & 0xFF, f"mach 0x{flags & 0xFF:x}"),
            "bytes": len(data)}


def build_opencl_dialect(mod, chip: GpuChip, profile, label: str):
    executable = relax_build(mod, chip)
    source = device_source(executable, "opencl")
    files = {"kernels.cl": source.encode()}
    facts = {"dialect": "opencl", "warp_size": chip.warp_size}
    device = opencl_device()
    needs = [ext for ext in ("cl_khr_fp16", "cl_khr_fp64") if f"#pragma OPENCL EXTENSION {ext}"
             in source]
    missing = [ext for ext in needs if device is None or ext not in device.extensions]
    started = time.perf_counter()
    if (missing or device is None) and clang_for_opencl() is None:
        facts["checked_by"] = ("nobody: no OpenCL platform or clang here (Debian: "
                               "pocl-opencl-icd brings both)")
    elif missing:
        checker = clang_check_opencl(source, label, tuple(needs))
        where = (f"{device.platform} lacks {', '.join(missing)}" if device else
                 "no OpenCL platform")
        facts["checked_by"] = (f"{checker}, -cl-std=CL1.2 -fsyntax-only for SPIR with "
                               f"{', '.join(needs)} ({where}; "
                               f"{time.perf_counter() - started:.1f} s)")
    elif device is not None:
        binary = build_opencl(source, label)
        facts["checked_by"] = (f"{device.platform} on {device.device} "
                               f"({time.perf_counter() - started:.1f} s)")
        if binary:
            name = "kernels.pocl.bin" if "Portable" in device.platform else "kernels.cl.bin"
            files[name] = binary
    else:
        facts["checked_by"] = (clang_check_opencl(source, label)
                               + ", -cl-std=CL1.2 -fsyntax-only (no OpenCL platform)")
    facts["vendor_compiler"] = f"not run: the {profile.vendor} OpenCL driver is not installed here"
    return executable, files, facts


BUILDERS = {"musa": build_cuda_like, "maca": build_cuda_like, "corex": build_cuda_like,
            "cuda": build_cuda_like, "hip": build_hip, "opencl": build_opencl_dialect}
