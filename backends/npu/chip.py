"""The `chip:` section of an Ascend-style profile: its JSON schema and a typed view of it.

Everything the npu backend knows about one chip comes from here (knowledge is data): buffer
capacities, the cube's fractal shape and dtypes, C0, alignment, the vector width, core counts,
the AI Core op table and ATC's precision-mode defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from anychip.compiler.errors import AnychipError
from anychip.compiler.profiles import Profile

BUFFERS = ("L1", "L0A", "L0B", "L0C", "UB")
PRECISION_MODES = ("force_fp16", "allow_fp32_to_fp16", "must_keep_origin_dtype",
                   "allow_mix_precision", "allow_mix_precision_fp16", "allow_mix_precision_bf16")
DTYPES = ["float32", "float16", "bfloat16", "int32", "int16", "int8", "uint8", "bool"]

_POSITIVE_INT = {"type": "integer", "minimum": 1}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_DTYPE_LIST = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": DTYPES}}
_OP_LIST = {"type": "array", "items": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]*$"}}

CHIP_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "npu chip section",
    "type": "object",
    "additionalProperties": False,
    "required": ["soc_version", "ai_cores", "vector_cores", "buffers", "cube", "c0",
                 "alignment_bytes", "fractal_bytes", "vector", "ai_cpu", "launch_us",
                 "max_onnx_opset", "precision_modes", "precision_mode_default",
                 "mix_precision", "ai_core_ops"],
    "properties": {
        "soc_version": {"type": "string", "pattern": "^Ascend[0-9A-Za-z]+$"},
        "ai_cores": _POSITIVE_INT,
        "vector_cores": _POSITIVE_INT,
        "l2_mb": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "buffers": {
            "type": "object", "additionalProperties": False, "required": list(BUFFERS),
            "properties": {b: {"type": "integer", "minimum": 512} for b in BUFFERS},
        },
        "cube": {
            "type": "object", "additionalProperties": False,
            "required": ["fractal", "k_by_dtype", "dtypes", "fractals_per_cycle", "accumulator"],
            "properties": {
                "fractal": {"type": "object", "additionalProperties": False,
                            "required": ["m", "n", "k"],
                            "properties": {d: _POSITIVE_INT for d in "mnk"}},
                "k_by_dtype": {"type": "object", "additionalProperties": _POSITIVE_INT},
                "dtypes": _DTYPE_LIST,
                "fractals_per_cycle": {"type": "object", "additionalProperties": _POSITIVE},
                "accumulator": {"type": "object", "additionalProperties": {"enum": DTYPES}},
            },
        },
        "c0": {"type": "object", "additionalProperties": _POSITIVE_INT},
        "alignment_bytes": _POSITIVE_INT,
        "fractal_bytes": _POSITIVE_INT,
        "vector": {
            "type": "object", "additionalProperties": False,
            "required": ["bytes_per_repeat", "repeats_per_cycle", "dtypes"],
            "properties": {"bytes_per_repeat": _POSITIVE_INT, "repeats_per_cycle": _POSITIVE,
                           "dtypes": _DTYPE_LIST},
        },
        "ai_cpu": {
            "type": "object", "additionalProperties": False,
            "required": ["cores", "gflops_per_core", "launch_us"],
            "properties": {"cores": _POSITIVE_INT, "gflops_per_core": _POSITIVE,
                           "launch_us": {"type": "number", "minimum": 0}},
        },
        "launch_us": {"type": "number", "minimum": 0},
        "max_onnx_opset": {"type": "integer", "minimum": 7},
        "precision_modes": {"type": "array", "minItems": 1, "uniqueItems": True,
                            "items": {"enum": list(PRECISION_MODES)}},
        "precision_mode_default": {
            "type": "object", "additionalProperties": False, "required": ["inference", "training"],
            "properties": {"inference": {"enum": list(PRECISION_MODES)},
                           "training": {"enum": list(PRECISION_MODES)}},
        },
        "mix_precision": {"type": "object", "additionalProperties": False,
                          "required": ["white", "black"],
                          "properties": {"white": _OP_LIST, "black": _OP_LIST}},
        "ai_core_ops": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Z][A-Za-z0-9]*$"},
            "additionalProperties": {"type": "array", "minItems": 1, "uniqueItems": True,
                                     "items": {"enum": DTYPES}},
        },
    },
}

CUBE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


@dataclass(frozen=True)
class Chip:
    """A typed view of one Ascend-style profile (the fields the backend reads)."""

    name: str
    raw: dict
    clock_ghz: float
    bandwidth_gbs: float
    memory_gb: float

    @staticmethod
    def of(profile: Profile) -> "Chip":
        chip = profile.chip
        if not chip or "buffers" not in chip:
            raise AnychipError(f"target '{profile.name}': the profile has no npu 'chip:' section; "
                               f"see backends/profiles/ascend-910b.yaml.")
        return Chip(profile.name, chip, float(profile.raw.get("clock_ghz") or 1.0),
                    float(profile.get("memory.bandwidth_gbs") or 100.0),
                    float(profile.get("memory.size_gb") or 0.0))

    # buffers and layout
    @property
    def buffers(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.raw["buffers"].items()}

    @property
    def alignment(self) -> int:
        return int(self.raw["alignment_bytes"])

    def c0(self, dtype: str) -> int:
        return int(self.raw["c0"].get(dtype, 16))

    # cores
    @property
    def ai_cores(self) -> int:
        return int(self.raw["ai_cores"])

    @property
    def vector_cores(self) -> int:
        return int(self.raw["vector_cores"])

    # cube
    @property
    def cube_dtypes(self) -> tuple[str, ...]:
        return tuple(self.raw["cube"]["dtypes"])

    def fractal(self, dtype: str) -> tuple[int, int, int]:
        """(m, n, k) of one cube instruction for input `dtype` (int8: 16x16x32)."""
        f = self.raw["cube"]["fractal"]
        k = self.raw["cube"]["k_by_dtype"].get(dtype, f["k"])
        return int(f["m"]), int(f["n"]), int(k)

    def accumulator(self, dtype: str) -> str:
        acc = self.raw["cube"]["accumulator"].get(dtype)
        if acc is None:
            raise AnychipError(f"target '{self.name}': the cube takes "
                               f"{', '.join(self.cube_dtypes)}, not {dtype}.")
        return acc

    def fractals_per_cycle(self, dtype: str) -> float:
        return float(self.raw["cube"]["fractals_per_cycle"].get(dtype, 1.0))

    # vector unit
    @property
    def vector_bytes(self) -> int:
        return int(self.raw["vector"]["bytes_per_repeat"])

    def vector_lanes(self, dtype: str) -> int:
        return max(self.vector_bytes // dtype_bytes(dtype), 1)

    @property
    def vector_repeats_per_cycle(self) -> float:
        return float(self.raw["vector"]["repeats_per_cycle"])

    # operators and precision
    @property
    def ai_core_ops(self) -> dict[str, tuple[str, ...]]:
        return {k: tuple(v) for k, v in self.raw["ai_core_ops"].items()}

    @property
    def precision_modes(self) -> tuple[str, ...]:
        return tuple(self.raw["precision_modes"])

    def default_precision_mode(self, training: bool = False) -> str:
        return self.raw["precision_mode_default"]["training" if training else "inference"]

    @property
    def mix_white(self) -> frozenset[str]:
        return frozenset(self.raw["mix_precision"]["white"])

    @property
    def mix_black(self) -> frozenset[str]:
        return frozenset(self.raw["mix_precision"]["black"])

    @property
    def has_bf16(self) -> bool:
        return "bfloat16" in self.cube_dtypes


def dtype_bytes(dtype: str) -> int:
    return {"float64": 8, "int64": 8, "uint64": 8, "float32": 4, "int32": 4, "uint32": 4,
            "float16": 2, "bfloat16": 2, "int16": 2, "uint16": 2, "int8": 1, "uint8": 1,
            "bool": 1}.get(dtype, 4)
