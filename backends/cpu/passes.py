"""The cpu backend's graph passes live in backends/host/relax_passes.py (shared with the npu
simulator); this module keeps the old import path working."""

from anychip.backends.host.relax_passes import (bound_value, combine_parallel_matmuls,
                                                drop_dropout, fold_constants, fold_conv_affine,
                                                sum_as_add, use_counts)

__all__ = ["bound_value", "combine_parallel_matmuls", "drop_dropout", "fold_constants",
           "fold_conv_affine", "sum_as_add", "use_counts"]
