"""The native tools the GPU backends use when present: the CUDA driver, nvcc, ld.lld and ROCm
device libraries. Each finder returns what it found, or None with nothing raised, so `doctor`,
`execution()` and the build can all say what is missing and what to install.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from anychip.compiler.errors import AnychipError

@dataclass(frozen=True)
class Tool:
    path: str
    version: str


@functools.lru_cache(maxsize=1)
def cuda_device() -> tuple[bool, str]:
    """(True, 'N CUDA device(s), driver X') or (False, why). Loads libcuda, never CUDA code."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no CUDA device: libcuda.so.1 not found (no NVIDIA driver on this machine)"
    if lib.cuInit(0) != 0:
        return False, "no CUDA device: the NVIDIA driver is installed but cuInit failed"
    count, version = ctypes.c_int(0), ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return False, "no CUDA device: the NVIDIA driver reports no GPU"
    lib.cuDriverGetVersion(ctypes.byref(version))
    v = version.value
    return True, f"{count.value} CUDA device(s), driver API {v // 1000}.{v % 1000 // 10}"


@functools.lru_cache(maxsize=1)
def nvcc() -> Tool | None:
    candidates = [shutil.which("nvcc"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"),
                                                     "bin", "nvcc")]
    for path in filter(None, candidates):
        if os.access(path, os.X_OK):
            out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
            match = re.search(r"release (\d+\.\d+)", out)
            return Tool(path, match.group(1) if match else "unknown")
    return None


def nvcc_compile(source: str, arch: str, fmt: str, label: str, timeout: int = 600) -> bytes:
    """CUDA source -> PTX or fatbin (SASS for `arch` plus its PTX) with nvcc.

    Raises AnychipError naming the first compiler error line.
    """
    tool = nvcc()
    if tool is None:
        raise AnychipError(f"{label}: nvcc is not installed; install the CUDA toolkit.")
    number = arch.removeprefix("sm_")
    if fmt == "ptx":
        flags = ["--ptx", f"-arch={arch}"]
    elif fmt == "fatbin":
        flags = ["--fatbin", f"-gencode=arch=compute_{number},code=[sm_{number},compute_{number}]"]
    else:
        raise AnychipError(f"{label}: unknown nvcc output format '{fmt}' (ptx or fatbin).")
    with tempfile.TemporaryDirectory(prefix="anychip-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / f"kernels.{fmt}"
        src.write_text(source)
        proc = subprocess.run([tool.path, *flags, "-O3", "-w", "-o", str(out), str(src)],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            errors = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln]
            first = (errors or (proc.stderr + proc.stdout).strip().splitlines() or ["?"])[0]
            raise AnychipError(f"{label}: nvcc {tool.version} rejected the generated CUDA source "
                               f"for {arch}: {first.strip()[:300]}")
        return out.read_bytes()


def _lld_version(path: str) -> int | None:
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"LLD (\d+)", out)
    return int(match.group(1)) if match else None


@functools.lru_cache(maxsize=1)
def lld_for_tvm() -> Tool | None:
    """An ld.lld at least as new as TVM's LLVM (older ones reject its AMDGPU code objects:
    'unknown abi version')."""
    import tvm

    major = tvm.target.codegen.llvm_version_major(allow_none=True) or 0
    names = [f"ld.lld-{v}" for v in range(major + 3, major - 1, -1)] + ["ld.lld"]
    for name in names:
        path = shutil.which(name)
        version = _lld_version(path) if path else None
        if version is not None and version >= major:
            return Tool(path, str(version))
    return None


def llvm_major() -> int:
    import tvm

    return tvm.target.codegen.llvm_version_major(allow_none=True) or 0


@functools.lru_cache(maxsize=1)
def rocm_bitcode_dir() -> str | None:
    """ROCm device libraries (ocml.bc ...): $ROCM_PATH, /opt/rocm, or Debian's rocm-device-libs."""
    roots = [os.environ.get("ROCM_PATH"), "/opt/rocm", "/usr/lib/x86_64-linux-gnu", "/usr/lib"]
    for root in filter(None, roots):
        folder = Path(root) / "amdgcn" / "bitcode"
        if (folder / "ocml.bc").exists():
            return str(folder)
    return None
