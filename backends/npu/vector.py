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


def pipeline(target, chip: Chip, log: list):
    """TVM's cpu_generic phases with the vector schedules after fusion. The dispatch phase
    (DispatchSortScan, DispatchSampling) is kept: it is what lowers cumsum, cumprod, sort and
    top-k, which LegalizeOps leaves alone."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir.dlight import ApplyDefaultSchedule

    @tvm.transform.module_pass(opt_level=0, name="AnychipNpuSimulatorPipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = (cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
                      + [ApplyDefaultSchedule(*schedule_rules(chip, log))]
                      + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
