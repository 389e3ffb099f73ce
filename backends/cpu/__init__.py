"""The `cpu` family: the host CPU through TVM's LLVM backend, executing for real."""

from .backend import CpuBackend

__all__ = ["CpuBackend"]
