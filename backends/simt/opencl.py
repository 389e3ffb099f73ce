"""Build OpenCL C with the machine's OpenCL platform (PoCL on a CPU-only host), through ctypes.

clBuildProgram runs a real OpenCL C compiler (PoCL: clang + LLVM) over TVM's generated source:
a syntax or type error in the generated code fails here with the compiler's log. The binary the
platform returns is kept in the artifact as evidence of what was built. No Python OpenCL
package is needed, only the ICD loader (libOpenCL.so.1) and a platform.
"""

from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from anychip.compiler.errors import AnychipError

CL_DEVICE_TYPE_ALL = 0xFFFFFFFF
CL_PLATFORM_VERSION, CL_PLATFORM_NAME = 0x0901, 0x0902
CL_DEVICE_NAME, CL_DEVICE_EXTENSIONS = 0x102B, 0x1030
CL_PROGRAM_BUILD_LOG = 0x1183
CL_PROGRAM_BINARY_SIZES, CL_PROGRAM_BINARIES = 0x1165, 0x1166


@dataclass(frozen=True)
class OpenClDevice:
    platform: str
    version: str
    device: str
    extensions: tuple[str, ...] = ()


def _lib():
    try:
        lib = ctypes.CDLL("libOpenCL.so.1")
    except OSError:
        return None
    vp, u32, sz = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t
    lib.clCreateContext.restype = vp
    lib.clCreateContext.argtypes = [vp, u32, ctypes.POINTER(vp), vp, vp,
                                    ctypes.POINTER(ctypes.c_int)]
    lib.clCreateProgramWithSource.restype = vp
    lib.clCreateProgramWithSource.argtypes = [vp, u32, ctypes.POINTER(ctypes.c_char_p),
                                              ctypes.POINTER(sz), ctypes.POINTER(ctypes.c_int)]
    lib.clBuildProgram.argtypes = [vp, u32, ctypes.POINTER(vp), ctypes.c_char_p, vp, vp]
    lib.clGetProgramBuildInfo.argtypes = [vp, vp, u32, sz, vp, ctypes.POINTER(sz)]
    lib.clGetProgramInfo.argtypes = [vp, u32, sz, vp, ctypes.POINTER(sz)]
    lib.clGetPlatformInfo.argtypes = [vp, u32, sz, vp, ctypes.POINTER(sz)]
    lib.clGetDeviceInfo.argtypes = [vp, u32, sz, vp, ctypes.POINTER(sz)]
    lib.clGetDeviceIDs.argtypes = [vp, ctypes.c_uint64, u32, ctypes.POINTER(vp),
                                   ctypes.POINTER(u32)]
    lib.clReleaseProgram.argtypes = [vp]
    lib.clReleaseContext.argtypes = [vp]
    return lib


def _info(getter, handle, key: int) -> str:
    size = ctypes.c_size_t(0)
    getter(handle, key, 0, None, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    getter(handle, key, size.value, buf, None)
    return buf.value.decode(errors="replace").strip()


@functools.lru_cache(maxsize=1)
def _first_device():
    lib = _lib()
    if lib is None:
        return None
    count = ctypes.c_uint32(0)
    if lib.clGetPlatformIDs(0, None, ctypes.byref(count)) != 0 or count.value == 0:
        return None
    platforms = (ctypes.c_void_p * count.value)()
    lib.clGetPlatformIDs(count.value, platforms, None)
    for platform in platforms:
        device, found = ctypes.c_void_p(), ctypes.c_uint32(0)
        if lib.clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, ctypes.byref(device),
                              ctypes.byref(found)) == 0 and found.value:
            return lib, device, OpenClDevice(
                _info(lib.clGetPlatformInfo, platform, CL_PLATFORM_NAME),
                _info(lib.clGetPlatformInfo, platform, CL_PLATFORM_VERSION).split(" Linux")[0],
                _info(lib.clGetDeviceInfo, device, CL_DEVICE_NAME),
                tuple(_info(lib.clGetDeviceInfo, device, CL_DEVICE_EXTENSIONS).split()))
    return None


def opencl_device() -> OpenClDevice | None:
    """The first OpenCL platform and device on this machine, or None."""
    found = _first_device()
    return found[2] if found else None


def build_opencl(source: str, label: str, options: str = "-cl-std=CL1.2") -> bytes:
    """Compile OpenCL C on this machine's platform; return the program binary.

    Raises AnychipError with the first error of the build log when the source does not compile.
    """
    found = _first_device()
    if found is None:
        raise AnychipError(f"{label}: no OpenCL platform here; install one (Debian: "
                           f"pocl-opencl-icd) to check OpenCL C.")
    lib, device, _ = found
    err = ctypes.c_int(0)
    ctx = lib.clCreateContext(None, 1, ctypes.byref(device), None, None, ctypes.byref(err))
    if err.value != 0:
        raise AnychipError(f"{label}: clCreateContext failed ({err.value}).")
    try:
        text = source.encode()
        strings = (ctypes.c_char_p * 1)(text)
        lengths = (ctypes.c_size_t * 1)(len(text))
        program = lib.clCreateProgramWithSource(ctx, 1, strings, lengths, ctypes.byref(err))
        if err.value != 0:
            raise AnychipError(f"{label}: clCreateProgramWithSource failed ({err.value}).")
        try:
            status = lib.clBuildProgram(program, 1, ctypes.byref(device), options.encode(),
                                        None, None)
            if status != 0:
                log = _build_log(lib, program, device)
                errors = ([ln for ln in log.splitlines() if "error" in ln]
                          or log.splitlines() or ["?"])
                raise AnychipError(f"{label}: the OpenCL compiler rejected the generated source "
                                   f"(status {status}): {errors[0].strip()[:300]}")
            return _binary(lib, program)
        finally:
            lib.clReleaseProgram(program)
    finally:
        lib.clReleaseContext(ctx)


def _build_log(lib, program, device) -> str:
    size = ctypes.c_size_t(0)
    lib.clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, None, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value + 1)
    lib.clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, size.value, buf, None)
    return buf.value.decode(errors="replace")


def _binary(lib, program) -> bytes:
    size = ctypes.c_size_t(0)
    if lib.clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, ctypes.sizeof(size),
                            ctypes.byref(size), None) != 0 or size.value == 0:
        return b""
    buf = ctypes.create_string_buffer(size.value)
    pointers = (ctypes.c_void_p * 1)(ctypes.cast(buf, ctypes.c_void_p))
    lib.clGetProgramInfo(program, CL_PROGRAM_BINARIES, ctypes.sizeof(pointers), pointers, None)
    return buf.raw


@functools.lru_cache(maxsize=1)
def clang_for_opencl() -> str | None:
    """A clang that parses OpenCL C (PoCL's Debian package brings clang-15)."""
    for name in ["clang", *(f"clang-{v}" for v in range(22, 13, -1))]:
        path = shutil.which(name)
        if path:
            return path
    return None


def clang_check_opencl(source: str, label: str, extensions: tuple[str, ...] = ()) -> str:
    """Parse and type-check OpenCL C 1.2 with clang for SPIR (extensions enabled as a device
    that has them would); return the checker's name. For code a local platform cannot build,
    e.g. half precision on PoCL's CPU device, which lacks cl_khr_fp16."""
    clang = clang_for_opencl()
    if clang is None:
        raise AnychipError(f"{label}: no clang to check OpenCL C; install clang.")
    flags = ["-x", "cl", "-cl-std=CL1.2", "-fsyntax-only", "--target=spir64",
             "-Xclang", "-finclude-default-header"]
    for ext in extensions:
        flags += ["-Xclang", f"-cl-ext=+{ext}"]
    with tempfile.TemporaryDirectory(prefix="anychip-cl-") as tmp:
        path = Path(tmp) / "kernels.cl"
        path.write_text(source)
        proc = subprocess.run([clang, *flags, str(path)], capture_output=True, text=True,
                              timeout=600)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln] or ["?"]
        raise AnychipError(f"{label}: clang rejected the generated OpenCL C: "
                           f"{errors[0].strip()[:300]}")
    version = subprocess.run([clang, "--version"], capture_output=True, text=True).stdout
    return (version.splitlines() or [clang])[0].strip()
