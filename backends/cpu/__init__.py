"""The `cpu` family: the host CPU through TVM's LLVM backend, executing for real."""

from anychip.compiler.dispatch import choose_openmp_wait_policy, register_library

from .backend import CpuBackend
from .torch_library import NAME as _TORCH_LIBRARY, TorchCpuLibrary

choose_openmp_wait_policy()   # before torch loads libgomp (see the function)
register_library(_TORCH_LIBRARY, TorchCpuLibrary)

__all__ = ["CpuBackend"]
