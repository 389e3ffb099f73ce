"""Vector-unit kernels and the TVM pipeline that builds the simulated program.

Everything that is not a cube kernel (elementwise, casts, pooling, data movement, reductions)
is what the chip's vector unit runs: one instruction covers `bytes_per_repeat` bytes (256 B:
128 float16 or 64 float32 lanes) of 32-byte-aligned UB operands (hardware.md §1.1, §1.3).
The schedule here gives the host program that shape: an injective kernel is one loop over
its output, split into vector repeats of the profile's lane count (vectorized when the
repeat divides the extent), the repeats spread over the vector cores. Reductions use dlight's
CPU rule; the cube kernels come scheduled and are left alone (`tir.is_scheduled`).
"""

from __future__ import annotations

from .chip import Chip

MIN_PARALLEL_ELEMENTS = 16384   # below this, a parallel region costs the host more than it saves


def _extent(sch, loop) -> int | None:
    try:
        return int(sch.get(loop).extent)
    except TypeError:
        return None


def _lanes_for(total: int, lanes: int) -> int:
    """The vector repeat for `total` elements: `lanes`, or its largest power-of-two divisor of
    `total` (a tail shorter than a repeat is a masked repeat on the chip)."""
    while lanes > 1 and total % lanes:
        lanes //= 2
    return lanes


def _vector_rule(chip: Chip):
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class VectorInjective(CPUScheduleRule):
        def apply(self, func, target, _tunable):
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if not infos or not all(info.is_injective() for info in infos):
                return None
            for info in infos[:-1]:
                try:
                    sch.compute_inline(info.block_rv)
                except Exception:  # TVM's ScheduleError: a block that cannot be inlined
                    return None
            block = infos[-1].block_rv
            loops = sch.get_loops(block)
            if not loops:
                return sch
            fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
            total = _extent(sch, fused)
            if total is None:
                return sch
            dtype = str(sch.get(block).writes[0].source.dtype)
            lanes = _lanes_for(total, chip.vector_lanes(dtype))
            outer = fused
            if lanes >= 8:
                outer, inner = sch.split(fused, [None, lanes])
                sch.vectorize(inner)
            if total >= MIN_PARALLEL_ELEMENTS and _extent(sch, outer) > 1:
                sch.parallel(outer)
            return sch

    return VectorInjective()


def schedule_rules(chip: Chip) -> list:
    from anychip.backends.cpu.schedule import schedule_rules as cpu_rules

    return [_vector_rule(chip)] + cpu_rules()[1:]    # dlight Reduction, outer-parallel


def pipeline(target, chip: Chip):
    """TVM's cpu_generic phases with the vector schedules after fusion."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir.dlight import ApplyDefaultSchedule

    @tvm.transform.module_pass(opt_level=0, name="AnychipNpuSimulatorPipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = (cpu.legalize_passes(target)
                      + [ApplyDefaultSchedule(*schedule_rules(chip))]
                      + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
