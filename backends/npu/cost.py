"""The cost model: estimated time on the chip, per kernel and in total, with its roofline.

One kernel per placed ONNX node, as ATC builds them (folded nodes cost nothing):
- cube: the kernel's cube instructions (fractals, edges padded to a fractal, from the same
  tiling plan the TIR kernel uses) over the AI cores its output tiles keep busy, at the
  profile's fractals per cycle and clock; GM traffic from the plan (A re-read once per column
  tile, B once per row tile, the output written once) over the memory bandwidth;
- vector: 256-byte repeats (`bytes_per_repeat`) of every operand element, times a small work
  factor per op (transcendentals and normalisations take several passes), over the vector
  cores; GM traffic is every operand read and every result written once;
- host (AI CPU): element work at the AI CPU's rate plus its launch overhead.
A kernel takes max(compute, memory) plus the launch overhead; kernels run one after another.
The roofline bound is the whole model's flops at the cube's peak against its bytes at the
memory bandwidth. Estimates, not measurements: every rate is in the profile, [U] ones listed.
"""

from __future__ import annotations

import math

from .chip import Chip, dtype_bytes
from .cube import plan_tiles
from .placement import static_shapes, tensor_types

VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
VECTOR_WORK = {"Exp": 4, "Log": 4, "Sigmoid": 4, "Tanh": 4, "Erf": 6, "Gelu": 8, "Softmax": 6,
               "LogSoftmax": 7, "LayerNormalization": 8, "InstanceNormalization": 8,
               "BatchNormalization": 2, "Div": 2, "Sqrt": 2, "Pow": 4, "Reciprocal": 2,
               "LRN": 8, "HardSwish": 3, "HardSigmoid": 2, "Softplus": 5, "Elu": 4, "Selu": 4,
               "Sin": 4, "Cos": 4}
# TOPI's names for the blocks of reshape-like ops: views on the chip (as VIEWS above)
VIEW_BLOCKS = ("T_reshape", "T_squeeze", "T_expand_dims")
GATHERS = frozenset({"Gather", "GatherElements", "GatherND"})
POOLS = frozenset({"MaxPool", "AveragePool"})


def gemm_dims(node, shapes: dict) -> tuple[int, int, int, int] | None:
    """(G, M, N, K) of a cube node as the lowering tiles it (None when shapes are unknown)."""
    get = shapes.get
    if node.op_type == "Conv":
        x, w, y = get(node.input[0]), get(node.input[1]), get(node.output[0])
        if not (x and w and y) or len(x) != 4:
            return None
        groups = next((a.i for a in node.attribute if a.name == "group"), 1) or 1
        return groups, y[0] * y[2] * y[3], w[0] // groups, w[1] * w[2] * w[3]
    if node.op_type in ("MatMul", "Gemm"):
        a, b = get(node.input[0]), get(node.input[1])
        if not (a and b) or len(a) < 2 or len(b) < 2:
            return None
        attrs = {at.name: at.i for at in node.attribute}
        if node.op_type == "Gemm":
            m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
            n = b[0] if attrs.get("transB") else b[1]
            return 1, m, n, k
        if len(b) == 2:
            return 1, math.prod(a[:-1]), b[-1], a[-1]
        batch = max(math.prod(a[:-2]), math.prod(b[:-2]))
        return batch, a[-2], b[-1], a[-1]
    return None


def _elements(shape) -> int:
    return math.prod(shape) if shape is not None else 0


def _kernel_cost(node, place: dict, chip: Chip, shapes: dict, types: dict, requested) -> dict:
    unit, dtype = place["unit"], place["dtype"] or types.get(node.output[0], "float32")
    ins = [t for t in node.input if t]
    if place["op_type"] in GATHERS:     # only the gathered rows of the data are read
        ins = ins[1:]
    in_bytes = sum(_elements(shapes.get(t)) * dtype_bytes(_dtype_of(t, place, types))
                   for t in ins)
    out_elems = sum(_elements(shapes.get(t)) for t in node.output if t)
    out_bytes = out_elems * dtype_bytes(dtype)
    if place["op_type"] in GATHERS:
        in_bytes += out_bytes
    k = {"node": place["name"], "op": place["op_type"], "unit": unit, "dtype": dtype}
    bandwidth = chip.bandwidth_gbs * 1e9
    if unit == "cube":
        dims = gemm_dims(node, shapes)
        if dims is None:
            return {**k, "time_us": 0.0, "note": "shapes unknown"}
        g, m, n, kk = dims
        out_dtype = "int32" if dtype == "int8" else dtype
        plan = plan_tiles(chip, g, m, n, kk, dtype, out_dtype, requested)
        return {**k, **cube_cost(chip, plan.as_dict())}
    elif unit == "vector":
        if place["op_type"] in VIEWS:
            return {**k, "flops": 0, "bytes": {"GM": 0}, "time_us": 0.0,
                    "note": "a view: no data moves"}
        work = VECTOR_WORK.get(place["op_type"], 1)
        if place["op_type"] in POOLS:
            kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [1])
            work = math.prod(kernel)
        elems = max(out_elems, max((_elements(shapes.get(t)) for t in ins), default=0))
        return {**k, **vector_cost(chip, elems, dtype, work, in_bytes + out_bytes)}
    elif unit == "host":
        ai_cpu = chip.raw["ai_cpu"]
        flops = max(out_elems, 1) * VECTOR_WORK.get(place["op_type"], 1)
        rate = ai_cpu["cores"] * ai_cpu["gflops_per_core"] * 1e9
        k.update(flops=flops, bytes={"GM": in_bytes + out_bytes})
        return {**k, **_timed(flops / rate, (in_bytes + out_bytes) / bandwidth,
                              float(ai_cpu["launch_us"]) * 1e-6)}
    return {**k, "flops": 0, "bytes": {"GM": 0}, "time_us": 0.0}


def _timed(compute: float, memory: float, launch: float) -> dict:
    """A kernel takes max(compute, memory) plus its launch overhead (seconds in, us out)."""
    return {"compute_us": round(compute * 1e6, 3), "memory_us": round(memory * 1e6, 3),
            "launch_us": round(launch * 1e6, 3),
            "bound": "compute" if compute >= memory else "memory",
            "time_us": round((max(compute, memory) + launch) * 1e6, 3)}


def cube_cost(chip: Chip, plan: dict) -> dict:
    """One cube kernel from its tiling plan (CubePlan.as_dict()): its fractals over the AI cores
    its output tiles keep busy, and the plan's GM traffic over the memory bandwidth."""
    waves = math.ceil(plan["blocks"] / chip.ai_cores)
    busy = plan["blocks"] / (waves * chip.ai_cores)
    cycles = plan["fractals"] / (chip.fractals_per_cycle(plan["in_dtype"]) * chip.ai_cores * busy)
    tile = plan["tile"]
    return {"flops": 2 * plan["G"] * plan["M"] * plan["N"] * plan["K"],
            "cube_fractals": plan["fractals"], "blocks": plan["blocks"],
            "tile": [tile["m1"], tile["n1"], tile["k1"], tile["k0"]],
            "bytes": plan["moved_bytes"], "buffer_bytes": plan["buffer_bytes"],
            **_timed(cycles / (chip.clock_ghz * 1e9), plan["moved_bytes"]["GM"] /
                     (chip.bandwidth_gbs * 1e9), float(chip.raw["launch_us"]) * 1e-6)}


def vector_cost(chip: Chip, elements: int, dtype: str, work: int, gm_bytes: int) -> dict:
    """One vector kernel: 256-byte repeats of its largest operand, `work` passes each, over the
    vector cores; `gm_bytes` over the memory bandwidth."""
    repeats = math.ceil(elements * dtype_bytes(dtype) / chip.vector_bytes) * work
    cycles = math.ceil(repeats / chip.vector_cores) / chip.vector_repeats_per_cycle
    return {"flops": elements * work, "vector_repeats": repeats,
            "bytes": {"GM": gm_bytes, "UB": gm_bytes},
            **_timed(cycles / (chip.clock_ghz * 1e9), gm_bytes / (chip.bandwidth_gbs * 1e9),
                     float(chip.raw["launch_us"]) * 1e-6)}


def _dtype_of(tensor: str, place: dict, types: dict) -> str:
    original = types.get(tensor, "float32")
    if place["unit"] in ("cube", "vector") and original == place.get("dtype_in") and \
            place.get("dtype"):
        return place["dtype"]
    return original


def _peak_activation_bytes(model, placements: dict, shapes: dict, types: dict) -> int:
    """Largest sum of live intermediate tensors along the graph order (weights excluded)."""
    graph = model.graph
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for t in node.input:
            last_use[t] = i
    for vi in graph.output:
        last_use[vi.name] = len(graph.node)
    inits = {i.name for i in graph.initializer}
    live: dict[str, int] = {vi.name: _elements(shapes.get(vi.name)) *
                            dtype_bytes(types.get(vi.name, "float32"))
                            for vi in graph.input if vi.name not in inits}
    peak = sum(live.values())
    for i, node in enumerate(graph.node):
        place = placements.get(node.name or node.output[0], {})
        if place.get("unit") == "folded":
            continue
        for t in node.output:
            if t:
                live[t] = _elements(shapes.get(t)) * dtype_bytes(
                    _dtype_of(t, place, types) if place else types.get(t, "float32"))
        peak = max(peak, sum(live.values()))
        for t in list(live):
            if last_use.get(t, -1) <= i and t not in {vi.name for vi in graph.output}:
                live.pop(t)
    return peak


def estimate(model, chip: Chip, report: dict, requested=None) -> dict:
    """Per-kernel and total estimated time, buffer and memory use, and the roofline bound."""
    if model is None:
        return {}
    shapes, types = static_shapes(model), tensor_types(model)
    nodes = report.get("placement", {}).get("nodes", [])
    by_name = {p["name"]: p for p in nodes}
    kernels = []
    for node in model.graph.node:
        place = by_name.get(node.name or node.output[0])
        if place is not None:
            kernels.append(_kernel_cost(node, place, chip, shapes, types, requested))
    weights = sum(_elements(tuple(i.dims)) * dtype_bytes(
        types.get(i.name, "float32")) for i in model.graph.initializer)
    activations = _peak_activation_bytes(model, by_name, shapes, types)
    return {
        **_summarise(kernels, chip),
        "memory": {"weights_bytes": weights, "peak_activation_bytes": activations,
                   "device_bytes": int(chip.memory_gb * 2**30),
                   "use": round((weights + activations) / (chip.memory_gb * 2**30), 6)
                   if chip.memory_gb else None},
    }


def train_step_estimate(chip: Chip, cube_kernels: dict, cube_calls: dict,
                        vector_kernels: list) -> dict:
    """A train step's estimate: it has no ONNX graph, so its kernels are the lowered program's.
    Each cube kernel (forward and backward matmul/conv) from its tiling plan, times the calls
    the step makes; each vector kernel the build scheduled from its element count and dtype,
    one pass, its elements read once and written once (the vector schedule logs no operand
    list, so this is a lower bound on traffic)."""
    kernels = []
    for name, plan in cube_kernels.items():
        calls = int(cube_calls.get(name, 0))
        if not calls:              # built, then left without a caller (dead code): never runs
            continue
        one = cube_cost(chip, plan)
        for key in ("flops", "time_us", "compute_us", "memory_us", "launch_us", "cube_fractals"):
            one[key] = round(one[key] * calls, 3) if isinstance(one[key], float) \
                else one[key] * calls
        one["bytes"] = {level: b * calls for level, b in one["bytes"].items()}
        kernels.append({"node": name, "op": plan.get("kind", "matmul"), "unit": "cube",
                        "dtype": plan["in_dtype"], "calls": calls, **one})
    for v in vector_kernels:
        elems, dtype = int(v["elements"]), str(v["dtype"])
        if str(v["block"]).startswith(VIEW_BLOCKS):
            kernels.append({"node": v["block"], "op": "view", "unit": "vector", "dtype": dtype,
                            "flops": 0, "bytes": {"GM": 0}, "time_us": 0.0,
                            "note": "a view on the chip: no data moves"})
            continue
        kernels.append({"node": v["block"], "op": "vector", "unit": "vector", "dtype": dtype,
                        **vector_cost(chip, elems, dtype, 1, 2 * elems * dtype_bytes(dtype))})
    return {**_summarise(kernels, chip),
            "note": "train step: kernels of the lowered program (no ONNX graph); vector "
                    "kernels one pass each, their traffic a lower bound"}


def _summarise(kernels: list, chip: Chip) -> dict:
    """Totals, the roofline bound and the peak buffer use over a list of kernel estimates."""
    total = {"time_us": 0.0, "cube_us": 0.0, "vector_us": 0.0, "host_us": 0.0}
    flops = gm = 0
    for k in kernels:
        total["time_us"] += k.get("time_us", 0.0)
        if k["unit"] in ("cube", "vector", "host"):
            total[f"{k['unit']}_us"] += k.get("time_us", 0.0)
        flops += k.get("flops", 0)
        gm += k.get("bytes", {}).get("GM", 0)
    total = {key: round(v, 3) for key, v in total.items()}
    cube_dtype = next((k["dtype"] for k in kernels if k["unit"] == "cube"), "float16")
    fm, fn, fk = chip.fractal(cube_dtype)
    peak_flops = (2 * fm * fn * fk * chip.fractals_per_cycle(cube_dtype) * chip.ai_cores
                  * chip.clock_ghz * 1e9)
    bandwidth = chip.bandwidth_gbs * 1e9
    intensity = flops / gm if gm else float("inf")
    ridge = peak_flops / bandwidth
    bound_s = max(flops / peak_flops, gm / bandwidth)
    buffers = {}
    for level, capacity in chip.buffers.items():
        used = max((k.get("buffer_bytes", {}).get(level, 0) for k in kernels), default=0)
        buffers[level] = {"peak_bytes": used, "capacity_bytes": capacity,
                          "use": round(used / capacity, 4)}
    return {
        "kernels": kernels,
        "total": {**total, "kernels": sum(1 for k in kernels if k.get("time_us", 0) > 0),
                  "flops": flops, "gm_bytes": gm},
        "roofline": {"peak_tflops": round(peak_flops / 1e12, 2), "dtype": cube_dtype,
                     "bandwidth_gbs": chip.bandwidth_gbs,
                     "arithmetic_intensity": round(intensity, 3),
                     "ridge_point": round(ridge, 3),
                     "bound": "compute" if intensity >= ridge else "memory",
                     "bound_time_us": round(bound_s * 1e6, 3)},
        "buffers": buffers,
    }
