"""The `npu` family: Ascend-style chips (ascend-910b, ascend-910, ascend-310p), compiled through
TVM with ATC's placement and precision rules, cube kernels tiled through the chip's buffers,
and run by a functional simulator on the host CPU (or ONNX Runtime's CANN provider)."""

from .backend import NpuBackend

__all__ = ["NpuBackend"]
