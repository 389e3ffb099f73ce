"""A GPU profile read as TVM needs it: the target, the per-kernel limits, the source dialect.

The numbers live in the profile (backends/profiles/*.yaml, sources in docs/hardware.md); this module
only checks that they are consistent and hands them to TVM. The `chip:` section of a profile of
family `cuda` or `gpu` is validated by CHIP_SCHEMA.
"""

from __future__ import annotations

from dataclasses import dataclass

from anychip.compiler.errors import ProfileError
from anychip.compiler.profiles import Profile

# Source dialects TVM can emit for a SIMT GPU, and which TVM target kind emits each.
#   cuda:  NVIDIA CUDA C++ (nvcc / NVRTC)
#   musa, maca, corex: CUDA C++ for CUDA-compatible toolchains (Moore Threads mcc via musify,
#          MetaX mxcc, Iluvatar CoreX), emitted by TVM's CUDA codegen with the chip's warp size
#   hip:   AMDGPU code through TVM's ROCm target (LLVM), for Hygon DCUs
#   opencl: OpenCL C through TVM's OpenCL codegen
DIALECT_TARGET_KIND = {"cuda": "cuda", "musa": "cuda", "maca": "cuda", "corex": "cuda",
                       "hip": "rocm", "opencl": "opencl"}

CHIP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["dialect", "max_block_dim"],
    "properties": {
        "dialect": {"enum": sorted(DIALECT_TARGET_KIND)},
        "max_block_dim": {
            "description": "Largest threadIdx.x, .y, .z extents of a block.",
            "type": "array", "items": {"type": "integer", "minimum": 1},
            "minItems": 3, "maxItems": 3},
        "lane_mask_bits": {
            "description": "Width of the warp lane mask taken by __shfl_*_sync on this toolchain "
                           "(CUDA-compatible dialects).",
            "enum": [32, 64]},
        "vendor_isa": {"description": "The ISA name the vendor's own toolchain uses.",
                       "type": "string"},
        "nvcc_check_arch": {
            "description": "NVIDIA arch nvcc checks a CUDA-compatible dialect's source against.",
            "type": "string", "pattern": "^sm_[0-9]+a?$"},
        "device_binary": {
            "description": "What nvcc compiles ahead of time into the artifact's device/ folder: "
                           "cubin (PTX, and a cubin from ptxas), ptx, or none.",
            "enum": ["cubin", "ptx", "none"]},
        "max_dynamic_shared_memory_per_block": {
            "description": "Shared memory a block may have when it opts in to dynamic shared "
                           "memory (TVM's runtime sets the attribute); static shared memory "
                           "stays within target.max_shared_memory_per_block (the default).",
            "type": "integer", "minimum": 1},
        "nvlink_gbs": {"type": ["number", "null"], "minimum": 0},
        "notes": {"type": "string"},
    },
}


_TARGETS: dict = {}


@dataclass(frozen=True)
class GpuChip:
    """What the GPU lowering needs from a profile, validated once."""

    name: str
    dialect: str
    target_attrs: dict
    warp_size: int
    max_threads_per_block: int
    max_shared_memory_per_block: int
    max_dynamic_shared_memory_per_block: int
    max_block_dim: tuple[int, int, int]
    lane_mask_bits: int
    float64: str

    @classmethod
    def from_profile(cls, profile: Profile) -> GpuChip:
        chip = profile.chip
        where = profile.path or f"profile '{profile.name}'"
        dialect = chip.get("dialect")
        if dialect not in DIALECT_TARGET_KIND:
            raise ProfileError(f"{where}: field 'chip.dialect' must be one of "
                               f"{', '.join(sorted(DIALECT_TARGET_KIND))}.")
        attrs = dict(profile.target)
        kind = DIALECT_TARGET_KIND[dialect]
        if attrs.get("kind") != kind:
            raise ProfileError(f"{where}: field 'target.kind' is '{attrs.get('kind')}' but "
                               f"dialect '{dialect}' is emitted by TVM's '{kind}' target; set "
                               f"kind: {kind}.")
        for key in ("thread_warp_size", "max_num_threads", "max_shared_memory_per_block"):
            if not isinstance(attrs.get(key), int) or attrs[key] < 1:
                raise ProfileError(f"{where}: field 'target.{key}' must be a positive integer.")
        attrs.setdefault("max_threads_per_block", attrs["max_num_threads"])
        block_dim = tuple(int(d) for d in chip["max_block_dim"])
        return cls(name=profile.name, dialect=dialect, target_attrs=attrs,
                   warp_size=attrs["thread_warp_size"],
                   max_threads_per_block=attrs["max_threads_per_block"],
                   max_shared_memory_per_block=attrs["max_shared_memory_per_block"],
                   max_dynamic_shared_memory_per_block=int(chip.get(
                       "max_dynamic_shared_memory_per_block",
                       attrs["max_shared_memory_per_block"])),
                   max_block_dim=block_dim,
                   lane_mask_bits=int(chip.get("lane_mask_bits", 32)),
                   float64=profile.raw.get("float64", "native"))

    def target(self):
        """The TVM target: the profile's attributes, host code for a generic x86-64 CPU.

        Cached per attribute set: building a ROCm target without a ROCm device logs a warning
        each time ("Unable to detect ROCm version"), once is enough."""
        import json

        key = json.dumps(self.target_attrs, sort_keys=True)
        if key not in _TARGETS:
            import tvm

            _TARGETS[key] = tvm.target.Target({**self.target_attrs, "host": {"kind": "llvm"}})
        return _TARGETS[key]

    def limits(self) -> dict[str, int]:
        """The constraints TVM's GPU code verifier takes, from the profile's numbers (its shared
        memory figure counts static and dynamic shared memory together)."""
        x, y, z = self.max_block_dim
        return {"max_threads_per_block": self.max_threads_per_block,
                "max_shared_memory_per_block": max(self.max_shared_memory_per_block,
                                                   self.max_dynamic_shared_memory_per_block),
                "max_thread_x": x, "max_thread_y": y, "max_thread_z": z}
