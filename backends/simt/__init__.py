"""Lowering shared by the SIMT GPU families (`cuda` and `gpu`): one TVM GPU pipeline, many chips.

What differs between an H100, a Hygon DCU and a Moore Threads S4000 is data in their profiles
(warp size, threads and shared memory per block, dialect); this package turns that data into a
TVM target, schedules every kernel with TVM's dlight GPU rules under those limits, checks each
kernel against them, and finds the device code in the built executable.
"""

from .chip import CHIP_SCHEMA, GpuChip
from .lowering import lower_for_gpu, relax_build

__all__ = ["CHIP_SCHEMA", "GpuChip", "lower_for_gpu", "relax_build"]
