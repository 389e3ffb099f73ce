"""Operator placement and precision, per ONNX node, as ATC decides them.

For every node of the (shape-inferred, static) ONNX model this says where it runs and in which
dtype, with the reason a porting engineer can act on:
- `folded`: every input is a compile-time constant (weights, Constant, Shape of a static
  tensor); ATC folds it, nothing runs;
- `cube` / `vector`: an AI Core kernel, with its compute dtype under the precision mode;
- `host`: the AI CPU (our host): control flow, an op missing from the profile's AI Core table,
  an int64/float64 tensor (AI Core ops take neither, docs/hardware.md §1.5), or a dtype the AI Core
  kernel lacks under the precision mode (must_keep_origin_dtype keeps float32 for a cube that
  has no float32).

Precision modes (docs/hardware.md §1.5, CANN ATC `--precision_mode`), for float32 in the graph:
- force_fp16: every AI Core op that takes float16 computes in float16;
- allow_fp32_to_fp16: cube ops in float16, vector ops keep float32 where the kernel has it;
- must_keep_origin_dtype: dtypes as in the graph;
- allow_mix_precision[_fp16|_bf16]: white-list ops in float16 (bfloat16), black-list ops in
  float32, the rest follow their inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx
from onnx import TensorProto, helper

from anychip.compiler.errors import AnychipError
# one implementation, in the importer fixes (atc.py and cost.py import it from here)
from anychip.compiler.importer_fixes.onnx_level import static_dims as static_shapes

from .chip import CUBE_OPS, Chip

CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})
NEVER_ON_AI_CORE = ("int64", "uint64", "float64")
MIX_MODES = {"allow_mix_precision": "float16", "allow_mix_precision_fp16": "float16",
             "allow_mix_precision_bf16": "bfloat16"}
# Ops whose output dtype is an attribute, not their input's: their dtypes are never changed.
DTYPE_FIXED = frozenset({"Cast", "CastLike", "ConstantOfShape", "EyeLike", "RandomNormal",
                         "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                         "Bernoulli", "Shape", "Size"})
FLOATS = ("float32", "float16", "bfloat16", "float64")


@dataclass
class NodePlacement:
    """Where one ONNX node runs and in which dtype (`dtype` is None for non-float nodes)."""

    name: str
    op_type: str
    unit: str          # "cube" | "vector" | "host" | "folded" | "fused"
    reason: str
    dtype_in: str | None
    dtype: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def dtype_name(elem_type: int) -> str:
    return helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type != TensorProto.BFLOAT16 \
        else "bfloat16"


def tensor_types(model: onnx.ModelProto) -> dict[str, str]:
    """dtype of every named tensor the model declares (inputs, initializers, value_info...)."""
    graph = model.graph
    types: dict[str, str] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = dtype_name(vi.type.tensor_type.elem_type)
    for init in graph.initializer:
        types[init.name] = dtype_name(init.data_type)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = dtype_name(attr.t.data_type)
    return types


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def schema_of(node, opset: int):
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return None


def accepts(schema, index: int, dtype: str, output: bool = False) -> bool:
    """Whether input (or output) `index` of an op with `schema` may hold `dtype`."""
    if schema is None:
        return False
    params = schema.outputs if output else schema.inputs
    if not params:
        return False
    param = params[min(index, len(params) - 1)]
    onnx_name = {"float32": "float", "float64": "double"}.get(dtype, dtype)
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    return f"tensor({onnx_name})" in allowed.get(param.type_str, {param.type_str})


def resolve_precision_mode(chip: Chip, options_extra: dict, precision: str | None,
                           training: bool = False) -> str:
    """--precision-mode wins; else --precision maps onto ATC's modes; else the chip's default."""
    mode = options_extra.get("precision_mode")
    if mode is None and precision is not None:
        by_precision = {"fp16": "force_fp16", "fp32": "must_keep_origin_dtype",
                        "mixed": "allow_mix_precision", "bf16": "allow_mix_precision_bf16"}
        if precision not in by_precision:
            raise AnychipError(f"target '{chip.name}': --precision {precision} is not one of "
                               f"{', '.join(by_precision)}.")
        mode = by_precision[precision]
    mode = mode or chip.default_precision_mode(training)
    if mode not in chip.precision_modes:
        extra = " (no bfloat16 on this chip)" if mode.endswith("bf16") else ""
        raise AnychipError(f"target '{chip.name}': precision mode '{mode}' is not supported"
                           f"{extra}; use one of {', '.join(chip.precision_modes)}.")
    return mode


def precision_used(mode: str, placements: list[NodePlacement]) -> str:
    """The precision name verification picks its tolerance by."""
    lowered = {p.dtype for p in placements
               if p.unit in ("cube", "vector") and p.dtype != p.dtype_in}
    if "bfloat16" in lowered:
        return "bf16"
    if mode in MIX_MODES and lowered:
        return "mixed"
    if "float16" in lowered:
        return "fp16"
    return "fp32"


class _Planner:
    def __init__(self, model: onnx.ModelProto, chip: Chip, mode: str):
        self.chip = chip
        self.mode = mode
        self.ops = chip.ai_core_ops
        self.types = tensor_types(model)
        self.shapes = static_shapes(model)
        self.opset = opset_of(model)
        self.constants = {i.name for i in model.graph.initializer}
        self.low: dict[str, str] = {}      # tensor -> dtype it is produced in, when lowered

    def is_constant(self, name: str) -> bool:
        return name == "" or name in self.constants

    def place(self, node) -> NodePlacement:
        name, op = node.name or node.output[0], node.op_type
        data_in = [t for t in node.input if t and not self.is_constant(t)]
        floats = [self.types.get(t) for t in list(node.input) + list(node.output)
                  if self.types.get(t) in FLOATS]
        dtype_in = floats[0] if floats else None

        def result(unit, reason, dtype=None):
            return NodePlacement(name, op, unit, reason, dtype_in, dtype or dtype_in)

        if node.op_type == "Constant" or (not data_in and node.op_type not in CONTROL_FLOW) or \
                (node.op_type in ("Shape", "Size") and node.input[0] in self.shapes):
            self.constants.update(node.output)
            return result("folded", "all inputs are compile-time constants: ATC folds it")
        if node.op_type in CONTROL_FLOW:
            return result("host", f"control flow ({op}) runs on the AI CPU")
        if node.domain not in ("", "ai.onnx"):
            return result("host", f"custom domain '{node.domain}' has no AI Core kernel")
        if op not in self.ops:
            return result("host", f"{op} is not in {self.chip.name}'s AI Core op table; "
                                  f"ATC places it on the AI CPU")
        for t in data_in + [o for o in node.output if o]:
            dt = self.types.get(t)
            if dt in NEVER_ON_AI_CORE and (t in data_in or dt == "float64"):
                kind = "input" if t in data_in else "output"
                fix = "cast it to int32" if dt.startswith(("int", "uint")) else "use float32"
                return result("host", f"{dt} {kind} '{t}': AI Core ops take no {dt}; ATC places "
                                      f"it on the AI CPU ({fix} in the model to keep it on the "
                                      f"AI Core)")
        unit = "cube" if op in CUBE_OPS else "vector"
        supported = self.ops[op]
        if dtype_in is None:    # integer / bool node
            bad = [self.types.get(t) for t in data_in
                   if self.types.get(t) and self.types[t] not in supported]
            if bad:
                return result("host", f"the AI Core {op} kernel takes {', '.join(supported)}, "
                                      f"not {bad[0]}")
            return result(unit, f"AI Core {unit} unit")
        dtype = self.compute_dtype(node, unit, dtype_in, data_in)
        if dtype not in supported:
            return result("host", f"precision mode {self.mode} keeps {dtype}, but the AI Core "
                                  f"{op} kernel takes {', '.join(supported)}; ATC places it on "
                                  f"the AI CPU")
        if dtype != dtype_in:
            for out in node.output:
                if out and self.types.get(out) == dtype_in:
                    self.low[out] = dtype
        why = f"AI Core {unit} unit" + (f", {dtype_in} -> {dtype} ({self.mode})"
                                        if dtype != dtype_in else "")
        return result(unit, why, dtype)

    def compute_dtype(self, node, unit: str, dtype_in: str, data_in: list[str]) -> str:
        if dtype_in != "float32" or node.op_type in DTYPE_FIXED:
            return dtype_in
        supported = self.ops[node.op_type]
        mode = self.mode
        if mode == "must_keep_origin_dtype":
            return "float32"
        if mode == "force_fp16":
            return "float16" if "float16" in supported else "float32"
        if mode == "allow_fp32_to_fp16":
            if unit == "cube" or "float32" not in supported:
                return "float16"
            return "float32"
        low = MIX_MODES[mode]
        if node.op_type in self.chip.mix_black or low not in supported:
            return "float32" if "float32" in supported else low
        if node.op_type in self.chip.mix_white:
            return low
        follows = [self.low.get(t) for t in data_in if self.types.get(t) in FLOATS]
        return low if low in follows else "float32"


def place_nodes(model: onnx.ModelProto, chip: Chip, mode: str) -> list[NodePlacement]:
    """One NodePlacement per node of the main graph, in graph (topological) order."""
    planner = _Planner(model, chip, mode)
    return [planner.place(node) for node in model.graph.node]


def summary(placements: list[NodePlacement]) -> dict:
    counts: dict[str, int] = {}
    for p in placements:
        counts[p.unit] = counts.get(p.unit, 0) + 1
    changes: dict[str, int] = {}
    for p in placements:
        if p.dtype_in and p.dtype != p.dtype_in and p.unit in ("cube", "vector"):
            key = f"{p.dtype_in}->{p.dtype}"
            changes[key] = changes.get(key, 0) + 1
    on_device = counts.get("cube", 0) + counts.get("vector", 0)
    runs = on_device + counts.get("host", 0)
    return {"counts": counts, "ai_core_coverage": round(on_device / runs, 4) if runs else 1.0,
            "dtype_changes": changes,
            "host_fallbacks": [{"node": p.name, "op": p.op_type, "reason": p.reason}
                               for p in placements if p.unit == "host"]}

