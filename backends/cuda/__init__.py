"""The `cuda` backend family: NVIDIA GPUs through TVM's CUDA codegen (see backend.py)."""

from .backend import CudaBackend

__all__ = ["CudaBackend"]
