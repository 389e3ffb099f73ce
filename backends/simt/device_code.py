"""Find the device code inside a built TVM executable, and capture what TVM does not expose.

A relax Executable imports the host (LLVM) module, which imports one module per device kind:
'cuda' (CUDA C++ source, compiled when loaded), 'opencl' (OpenCL C), 'hip' (AMDGPU code
object; its LLVM IR and assembly are inspectable). TVM gives no API for the ROCm code object's
bytes without a ROCm runtime, so `capture_rocm_link` links it with ld.lld itself, during the
build, and keeps a copy.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
from pathlib import Path

HOST_KINDS = {"relax.VMExecutable", "llvm", "library", "c", "static_library"}


def device_modules(executable) -> list:
    """The device modules an executable imports, in a stable order."""
    found, stack, seen = [], [executable.mod], set()
    while stack:
        module = stack.pop()
        for child in module.imports:
            if id(child) in seen:
                continue
            seen.add(id(child))
            if child.kind not in HOST_KINDS:
                found.append(child)
            stack.append(child)
    return sorted(found, key=lambda m: m.kind)


def device_source(executable, kind: str, fmt: str = "") -> str:
    """The source text of the executable's `kind` device module ('' when there is none)."""
    return "\n".join(m.inspect_source(fmt) for m in device_modules(executable) if m.kind == kind)


_ROCM_LOCK = threading.Lock()


@contextlib.contextmanager
def capture_rocm_link(lld: str, bitcode_dir: str | None, mcpu: str):
    """While active, TVM's ROCm codegen links with `lld` and finds ROCm device bitcode in
    `bitcode_dir`; each linked code object is appended to the yielded list.

    Both are process-wide TVM callbacks, so they are swapped under a lock and put back after.
    """
    import tvm
    import tvm.support.rocm  # noqa: F401  (registers TVM's own callbacks, restored below)
    import tvm_ffi

    names = ("tvm_callback_rocm_link", "tvm_callback_rocm_bitcode_path")
    code_objects: list[bytes] = []

    def link(obj_bin):
        with tempfile.TemporaryDirectory(prefix="anychip-rocm-") as tmp:
            obj, out = Path(tmp) / "kernels.o", Path(tmp) / "kernels.hsaco"
            obj.write_bytes(bytes(obj_bin))
            proc = subprocess.run([lld, "--no-undefined", "-shared", str(obj), "-o", str(out)],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"{lld} failed: {proc.stdout.strip()} {proc.stderr.strip()}")
            data = out.read_bytes()
        code_objects.append(data)
        return bytearray(data)

    def bitcode_path(rocdl_dir=None):
        return tvm.runtime.convert(rocm_bitcode_files(bitcode_dir, mcpu))

    with _ROCM_LOCK:
        previous = {n: tvm.get_global_func(n, allow_missing=True) for n in names}
        tvm_ffi.register_global_func(names[0], link, override=True)
        tvm_ffi.register_global_func(names[1], bitcode_path, override=True)
        try:
            yield code_objects
        finally:
            for name, func in previous.items():
                if func is not None:
                    tvm_ffi.register_global_func(name, func, override=True)


# ROCm device-library bitcode TVM's AMDGPU codegen links: the math library and the control
# constants it reads (these names are the ROCm device-libs files, stable since ROCm 3.9).
_BITCODE = ["ocml", "oclc_daz_opt_off", "oclc_finite_only_off",
            "oclc_correctly_rounded_sqrt_on", "oclc_unsafe_math_off",
            "oclc_wavefrontsize64_on", "oclc_abi_version_500"]


def rocm_bitcode_files(bitcode_dir: str | None, mcpu: str) -> list[str]:
    """The bitcode files for `mcpu` (gfx906 -> oclc_isa_version_906) that exist in the folder."""
    if bitcode_dir is None:
        return []
    names = _BITCODE + [f"oclc_isa_version_{mcpu.removeprefix('gfx')}"]
    files = [Path(bitcode_dir) / f"{name}.bc" for name in names]
    return [str(f) for f in files if f.exists()]
