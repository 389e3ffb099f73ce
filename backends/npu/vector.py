"""Vector-unit kernels and the TVM pipeline that builds the simulated program.

Everything that is not a cube kernel (elementwise, casts, pooling, data movement, reductions)
is what the chip's vector unit runs: one instruction covers `bytes_per_repeat` bytes (256 B:
128 float16 or 64 float32 lanes) of 32-byte-aligned UB operands (docs/hardware.md §1.1, §1.3).
The schedule here gives the host program that shape: an injective kernel is one loop over
its output, split into vector repeats of the profile's lane count (vectorized when the
repeat divides the extent), the repeats spread over the vector cores. Reductions use dlight's
CPU rule; the cube kernels come scheduled and are left alone (`tir.is_scheduled`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .chip import Chip, dtype_bytes

MIN_PARALLEL_ELEMENTS = 16384   # below this, a parallel region costs the host more than it saves


def _extent(sch, loop) -> int | None:
    try:
        return int(sch.get(loop).extent)
    except TypeError:
        return None


def _lanes_for(total: int, lanes: int, smallest: int) -> int:
    """The vector repeat for `total` elements: `lanes`, or the largest power-of-two divisor of
    `total` below it that still covers one aligned block (`smallest` lanes); 0 when none does
    (the chip then runs masked repeats, the host a scalar loop)."""
    while lanes >= smallest and total % lanes:
        lanes //= 2
    return lanes if lanes >= smallest else 0


def _vector_rule(chip: Chip, log: list):
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    from ..host.schedule import inline_injective, safe_lanes

    class VectorInjective(CPUScheduleRule):
        def apply(self, func, target, _tunable):
            inlined = inline_injective(func)
            if inlined is None:
                return None
            sch, infos, _kept = inlined   # kept blocks: their own (serial) loop nests
            block = infos[-1].block_rv
            loops = sch.get_loops(block)
            if not loops:
                return sch
            fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
            total = _extent(sch, fused)
            if total is None:
                return sch
            dtype = str(sch.get(block).writes[0].source.dtype)
            size = dtype_bytes(dtype)
            lanes = _lanes_for(total, chip.vector_lanes(dtype),
                               max(chip.alignment // size, 1))
            outer = fused
            if lanes:
                safe = safe_lanes(sch, block, lanes, fused)   # TVM's wrapped-index bug
                outer, inner = sch.split(fused, [None, lanes])
                if safe == lanes:
                    sch.vectorize(inner)
                elif safe > 1:
                    sch.vectorize(sch.split(inner, [None, safe])[1])
            log.append({"block": str(sch.get(block).name_hint), "elements": total, "dtype": dtype,
                        "lanes": lanes, "repeat_bytes": lanes * size,
                        "aligned": lanes * size % chip.alignment == 0 if lanes else False})
            if total >= MIN_PARALLEL_ELEMENTS and _extent(sch, outer) > 1:
                sch.parallel(outer)
            return sch

    return VectorInjective()


def _guarded(rule):
    """A rule that gives up (None: the next rule, or no schedule) where TVM cannot apply it,
    e.g. dlight's Reduction on a reduction whose consumer is a cast of an output."""
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class Guarded(CPUScheduleRule):
        def apply(self, func, target, tunable):
            try:
                return rule.apply(func, target, tunable)
            except Exception:  # TVM's ScheduleError and friends
                return None

    return Guarded()


def schedule_rules(chip: Chip, log: list) -> list:
    """The vector rule (each kernel it schedules is appended to `log`), then the host's
    dlight Reduction and outer-parallel rules."""
    from anychip.backends.host.schedule import reduction_rules

    return [_guarded(rule) for rule in [_vector_rule(chip, log)] + reduction_rules()]


# Scheduled kernels kept per process (least recently used dropped past this many): the chips
# of one family simulate the same vector kernels, so a matrix or `verify --target all`
# schedules each once instead of once per chip.
MEMO_KERNELS = 4096
_MEMO: OrderedDict = OrderedDict()
_MEMO_LOCK = threading.Lock()   # compiles in threads of one process share the memo


def _chip_key(chip: Chip, target) -> tuple:
    """What the schedules depend on besides the kernel: the vector unit's repeat and
    alignment (the vector rule) and the host target (dlight's rules)."""
    return chip.vector_bytes, chip.alignment, str(target)


def memoised_schedules(chip: Chip, log: list, target):
    """dlight's ApplyDefaultSchedule with schedule_rules(chip, log), each kernel scheduled
    once per process: a kernel structurally equal (its name aside) to one scheduled before
    for the same chip key takes that schedule and the `log` entries it made (scheduling was
    15-25% of a simulated build: 0.7 s of ResNet-50's, 2.3 s of DenseNet-121's)."""
    import tvm
    import tvm_ffi

    rules = schedule_rules(chip, log)
    chip_key = _chip_key(chip, target)

    def schedule(func):
        """(scheduled func or None, its log entries), by the rules in order."""
        before = len(log)
        for rule in rules:
            space = rule.apply(func, target, False)
            if space is None:
                continue
            sch = space if isinstance(space, tvm.s_tir.Schedule) else space[0]
            return sch.mod["main"].with_attr("tirx.is_scheduled", True), log[before:]
        return None, log[before:]

    @tvm.transform.module_pass(opt_level=0, name="AnychipNpuVectorSchedules")
    def _schedules(mod, _ctx):
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc) or \
                    int(func.attrs.get("tirx.is_scheduled", 0) if func.attrs else 0) == 1:
                continue
            name = func.attrs.get("global_symbol") if func.attrs else None
            plain = func.without_attr("global_symbol") if name is not None else func
            key = (chip_key, tvm_ffi.structural_hash(plain))
            with _MEMO_LOCK:
                hit = _MEMO.get(key)
            if hit is not None and tvm_ffi.structural_equal(hit[0], plain):
                scheduled, entries = hit[1], hit[2]
                log.extend(entries)
            else:
                scheduled, entries = schedule(plain)
                hit = (plain, scheduled, list(entries))
            with _MEMO_LOCK:
                _MEMO[key] = hit
                _MEMO.move_to_end(key)
                while len(_MEMO) > MEMO_KERNELS:
                    _MEMO.popitem(last=False)
            if scheduled is not None:
                updated[gvar] = scheduled if name is None else \
                    scheduled.with_attr("global_symbol", name)
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    return _schedules


def pipeline(target, chip: Chip, log: list):
    """TVM's cpu_generic phases with the vector schedules after fusion. The dispatch phase
    (DispatchSortScan, DispatchSampling) is kept: it is what lowers cumsum, cumprod, sort and
    top-k, which LegalizeOps leaves alone."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0, name="AnychipNpuSimulatorPipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = (cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
                      + [memoised_schedules(chip, log, target)]
                      + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
