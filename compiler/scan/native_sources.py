"""CUDA C++ sources: .cu/.cuh files, and C++ files that include the CUDA runtime.

These are not Python, so a line scan is the right tool: each file is one finding (at its first
kernel, or line 1) that counts its `__global__` kernels, since the porting cost is per kernel.
"""

from __future__ import annotations

import re

from .findings import Finding

CUDA_SUFFIXES = (".cu", ".cuh")
CPP_SUFFIXES = (".cpp", ".cc", ".cxx", ".h", ".hpp", ".hh")
_CUDA_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](cuda[_a-z]*\.h|cuda/|cub/|thrust/|cublas|'
                           r'cudnn|curand|cusparse|cufft|nccl\.h|ATen/cuda/|c10/cuda/)')
_KERNEL = re.compile(r"\b__global__\b")
_PORTABLE = ("rewrite the kernel as torch ops (then export this module with anychip), as a "
             "Triton kernel where the family has Triton, or in the vendor's kernel language "
             "(hipify for HIP stacks)")


def scan_native(path: str, text: str) -> list[Finding]:
    lines = text.splitlines()
    kernels = [n for n, line in enumerate(lines, 1) if _KERNEL.search(line)]
    if path.endswith(CUDA_SUFFIXES):
        where = kernels[0] if kernels else 1
        what = f"CUDA source with {len(kernels)} __global__ kernel(s)"
        rule = "cuda-source"
    else:
        includes = [n for n, line in enumerate(lines, 1) if _CUDA_INCLUDE.match(line)]
        if not includes and not kernels:
            return []
        where = includes[0] if includes else kernels[0]
        what = (f"C++ source including CUDA headers ({len(includes)} include(s), "
                f"{len(kernels)} __global__ kernel(s))")
        rule = "cuda-include"
    code = lines[where - 1].strip()[:200] if lines else ""
    return [Finding(path=path, line=where, column=1, category="cuda-source", severity="blocks",
                    rule=rule, kind="cuda-kernel", api=path.rsplit(".", 1)[-1], message=what,
                    portable=_PORTABLE, code=code)]
