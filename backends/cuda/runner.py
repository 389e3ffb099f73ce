"""Run a cuda artifact on this host's GPU with the Relax VM, using its precompiled device code.

TVM compiles a CUDA module's source when it is loaded, through the `tvm_callback_cuda_compile`
callback. The runner registers a callback that answers, for the artifact's own kernels.cu (found
by its sha256), with the cubin or PTX nvcc made at build time; any other source is compiled by
nvcc here when it is installed, and by TVM's NVRTC callback (fast math) only as a last resort.
A GPU older than the artifact's architecture is refused: PTX for sm_90 does not run on sm_80.
"""

from __future__ import annotations

import hashlib
import threading
import warnings

from anychip.backends.host.vm_runner import VmRunner
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


# How each CUDA module this process loaded got its binary (the runner reports it).
COMPILED_BY = {"precompiled": 0, "nvcc": 0, "nvrtc": 0}


def _as_text(code) -> str:
    return bytes(code).decode() if isinstance(code, (bytes, bytearray)) else str(code)


def install_compile_hook() -> None:
    """Register the compile callback once per process (public: the build calls it first).

    TVM calls it when a CUDA module is built on a host with a CUDA driver (a target is current:
    compile for its arch) and when one holding source is loaded (no target: the artifact's own
    binary first). Order: the artifact's own precompiled cubin/PTX (matched by the source's sha256), else nvcc
    here (same flags as the build: -O3, no fast math), else TVM's NVRTC callback, which always
    compiles with --use_fast_math (powf becomes exp2(y*log2(x)), NaN for a negative base).
    """
    import tvm
    import tvm_ffi

    from anychip.backends.simt.toolchains import nvcc, nvcc_compile

    with _LOCK:
        if _INSTALLED:
            return
        try:
            import tvm.support.nvcc  # noqa: F401  (registers TVM's own callback)
        except ImportError:
            pass
        fallback = tvm.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

        def compile_or_lookup(code, *rest):
            text = _as_text(code)
            target = tvm.target.Target.current(allow_none=True)
            arch = str(target.attrs.get("arch", "")) if target is not None and \
                target.kind.name == "cuda" else ""
            if not arch:   # loading a module: the artifact's own binary, when it has one
                binary = _PRECOMPILED.get(hashlib.sha256(text.encode()).hexdigest())
                if binary is not None:
                    COMPILED_BY["precompiled"] += 1
                    return binary
            if nvcc() is not None:   # building on a GPU host compiles for the target's arch
                COMPILED_BY["nvcc"] += 1
                return nvcc_compile(text, arch or _device_arch(), "fatbin", "CUDA kernels")
            if fallback is None:
                raise RuntimeError("no CUDA compiler: install nvcc or cuda-bindings (NVRTC)")
            COMPILED_BY["nvrtc"] += 1
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
        install_compile_hook()
        before = dict(COMPILED_BY)
        super().__init__(artifact, "cuda", execution)
        used = [k for k, v in COMPILED_BY.items() if v > before[k]]
        self.device_code = used[0] if used else "not loaded yet"
        if "nvrtc" in used:
            warnings.warn(f"artifact '{artifact.path.name}': no precompiled kernels for {here} "
                          f"and no nvcc here; TVM's NVRTC compiled them with fast math "
                          f"(less accurate pow/exp/division)", stacklevel=2)
