"""The `gpu` backend family: domestic GPUs (Hygon DCU, Moore Threads, MetaX, Iluvatar, Biren)."""

from .backend import GpuBackend

__all__ = ["GpuBackend"]
