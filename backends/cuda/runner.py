"""Run a cuda artifact on this host's GPU with the Relax VM, using its precompiled device code.

TVM compiles a CUDA module's source when it is loaded, through the `tvm_callback_cuda_compile`
callback. The runner registers a callback that answers, for the artifact's own kernels.cu (found
by its sha256), with the cubin or PTX nvcc made at build time, and defers to TVM's callback for
any other source. A GPU older than the artifact's architecture is refused: PTX for sm_90 does
not run on sm_80.
"""

from __future__ import annotations

import hashlib
import threading

from anychip.backends.cpu.backend import VmRunner
from anychip.compiler.backend import Execution
from anychip.compiler.errors import NotExecutable

_PRECOMPILED: dict[str, bytes] = {}
_LOCK = threading.Lock()
_INSTALLED: list = []


def cuda_bindings_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("cuda-bindings")
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return None


def _install_compile_hook() -> None:
    """Register the lookup callback once per process, keeping TVM's own as the fallback."""
    import tvm
    import tvm_ffi

    with _LOCK:
        if _INSTALLED:
            return
        try:
            import tvm.support.nvcc  # noqa: F401  (registers TVM's own callback)
        except ImportError:
            pass
        fallback = tvm.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

        def compile_or_lookup(code, *rest):
            key = hashlib.sha256(str(code).encode()).hexdigest()
            binary = _PRECOMPILED.get(key)
            if binary is not None:
                return tvm_ffi.convert(binary) if not isinstance(binary, bytes) else binary
            if fallback is None:
                raise RuntimeError("no CUDA compiler: install cuda-bindings (NVRTC) or nvcc")
            return fallback(code, *rest)

        tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_or_lookup,
                                     override=True)
        _INSTALLED.append(compile_or_lookup)


def _device_arch() -> str:
    import tvm

    return "sm_" + str(tvm.cuda(0).compute_version).replace(".", "")


class CudaRunner(VmRunner):
    def __init__(self, artifact, execution: Execution):
        runtime = artifact.manifest.get("runtime", {})
        arch, source_sha = runtime.get("arch"), runtime.get("kernels_cu_sha256")
        here = _device_arch()
        if arch and int(here[3:]) < int(arch[3:].rstrip("a")):
            raise NotExecutable(f"artifact '{artifact.path.name}' was compiled for {arch} but this "
                                f"GPU is {here}; compile for a matching profile.")
        device = artifact.path / "device"
        cubin, ptx = device / f"kernels.{arch}.cubin", device / f"kernels.{arch}.ptx"
        if source_sha and cubin.exists() and here == arch:
            _PRECOMPILED[source_sha] = cubin.read_bytes()
        elif source_sha and ptx.exists():
            _PRECOMPILED[source_sha] = ptx.read_bytes() + b"\0"
        _install_compile_hook()
        super().__init__(artifact, "cuda", execution)
