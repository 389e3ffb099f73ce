"""Default schedules for kernels built for the host CPU: the cpu backend's Relax pipeline after
library dispatch, and the rules the npu simulator uses after its own vector rule.

TVM's default CPU pipeline leaves every kernel as a scalar single-threaded loop nest
(docs/tvm-notes.md). After dispatch, what TVM still compiles is memory-bound glue (elementwise,
layout permutations, pooling, normalisation, softmax), so a simple schedule is enough:
- `Injective`: all blocks inlined into the last one, its loops fused, the outer part parallel
  over the cores and the inner part vectorized;
- dlight's CPU `Reduction` rule (softmax, layer norm: parallel rows, vectorized elementwise),
  after `SingleRow` for a kernel of one row, which that rule schedules in O(n^2);
- `ColumnReduction` (serial kernels): a sum over leading axes (collapse_sum of a bias
  gradient) runs its reduction loops outside and vectorizes along the contiguous axis;
- `OuterParallel`: anything else (pooling, leftover reductions) gets its outermost spatial
  loop parallel, which is always legal for a spatial loop.
The rest of the pipeline is TVM's own cpu_generic phases, unchanged.
"""

from __future__ import annotations

import math

from .concat import partition_concat
from .elementwise_loops import (MIN_PARALLEL_ELEMENTS, _parallel_vectorize,
                               _touches_bool, safe_lanes)
from .lanes import vector_lanes as _vector_lanes
from .tir_walk import children as _children, static_int, uses as _uses

# Below this many output elements a parallel region costs more than it saves.


def _extent(sch, loop) -> int | None:
    return static_int(sch.get(loop).extent)


def _rule(apply, parallel: bool):
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    return type(apply.__name__, (CPUScheduleRule,),
                {"apply": lambda self, f, t, _: apply(f, t, parallel)})()


# The largest expression (in IR nodes, as a tree) that inlining may build in one block.
# Inlining substitutes a producer's expression at every read of it: a consumer that reads its
# producer k times (NaN-propagating relu reads x three times, x*x twice) copies it k times,
# so a fused chain of n such ops became a k^n-node tree that every later TIR pass walks node
# by node (a 15-node Add/Relu/Mul chain: 200 s and 7 GB in build). A block whose inlined tree
# would pass this size is computed into its own buffer instead (one more loop nest).
INLINE_MAX_NODES = 64
_LOAD = "TensorLoad"   # TVM 0.27's BufferLoad node (its `source` is the buffer)


def _inlined_size(expr, sizes: dict) -> int:
    """Tree size of `expr` once the buffers in `sizes` ({buffer handle: tree size}) are
    inlined; an iterative walk of the block's own (small, not yet inlined) expression."""
    total, stack = 0, [expr]
    while stack:
        node = stack.pop()
        if type(node).__name__ == _LOAD:
            total += sizes.get(node.source.__chandle__(), 1)
            continue
        total += 1
        stack.extend(_children(node))
    return total


def inline_injective(func):
    """(schedule, block infos, kept) of an all-injective PrimFunc with every block but the
    last inlined into its consumers, except the blocks in `kept` (infos), whose inlined
    expression would pass INLINE_MAX_NODES and which keep their own loop nest; None when a
    block is not injective or cannot be inlined. Shared by the host rule below and the npu
    vector unit's rule, which differ only in how they split."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if not infos or not all(info.is_injective() for info in infos):
        return None
    sizes: dict[int, int] = {}
    kept = []
    for info in infos[:-1]:
        block = sch.get(info.block_rv)
        size = _inlined_size(block.body, sizes)
        if size > INLINE_MAX_NODES or len(block.writes) != 1:
            kept.append(info)
            continue
        try:
            sch.compute_inline(info.block_rv)
        except Exception:  # TVM raises ScheduleError when a block cannot be inlined
            return None
        sizes[block.writes[0].source.__chandle__()] = size
    return sch, infos, kept


def _injective(func, target, parallel: bool):
    inlined = inline_injective(func)
    if inlined is None:
        return None
    sch, infos, kept = inlined
    for info in kept + [infos[-1]]:
        trial = sch.copy()   # a concatenation's partition either completes or is not kept
        try:
            partitioned = partition_concat(trial, info.block_rv, target, parallel,
                                           MIN_PARALLEL_ELEMENTS)
        except Exception:  # noqa: BLE001 - TVM's ScheduleError: scheduled as any block
            partitioned = False
        if partitioned:
            sch = trial
        else:
            _parallel_vectorize(sch, info.block_rv, target, parallel)
    return sch


def _outer_parallel(func, target, parallel: bool):
    """Parallelize the outermost loop of every top-level loop nest when it is spatial."""
    from tvm import s_tir

    from tvm.s_tir.dlight.analysis import get_root_block

    if not parallel:
        return None
    sch = s_tir.Schedule(func)
    changed = False
    try:
        blocks = sch.get_child_blocks(get_root_block(sch))
    except ValueError:
        return None
    for block in blocks:
        loops = sch.get_loops(block)
        if not loops:
            continue
        iters = sch.get(block).iter_vars
        outer = _extent(sch, loops[0])
        spatial = iters and iters[0].iter_type == 0   # IterVar.DataPar
        # a symbolic outer loop (a dynamic batch or sequence) is taken to be worth it
        worth = outer is None or (outer > 1 and _work(sch, block) >= MIN_PARALLEL_ELEMENTS)
        if spatial and worth:
            try:
                sch.parallel(loops[0])
                changed = True
            except Exception:  # not a loop the block binds 1:1: leave it serial
                continue
    return sch if changed else None


# A column reduction followed by injective blocks (mean's divide) is taken only when its output
# is this small: the blocks after it stay plain loops over that output.
MAX_EPILOGUE_OUTPUT = 16384


def _column_reduction(func, target, parallel: bool):
    """A sum over the leading axes of a row-major tensor, e.g. a bias gradient's
    collapse_sum [B, T, N] -> [N] or an NHWC global average pool's mean over H and W
    (squeeze-excite: zoo:efficientnet's 0.37 ms kernel), with injective producers inlined
    into it and injective consumers (mean's divide) left after it. TVM's loop nest
    runs the reduction innermost, reading a column with a stride of a whole row per element
    (1.4 ms for [128, 1024] -> [1024]); here the reduction loops go outside and the spatial
    ones inside, contiguous (LLVM vectorizes out[j] += x[r, j]): 0.04 ms. Each output
    element still sums its column in the original order; an inlined product (x * g) may now
    contract to FMA. With `parallel`, only a sum of each output's own column whose first
    spatial axis is the input's first (the images of a batch: a global average pool at batch
    8) and large enough for the pool runs in parallel: that axis stays outermost, the
    reduction and the contiguous axis inside it (EfficientNet's pools at batch 8 ran at 1.5 G
    elements/s as TVM's strided nest under OuterParallel). Other sums of each output's own
    column (a pool at batch 1) take the serial nest even in a parallel build: under
    OuterParallel, EfficientNet's [1, 112, 112, 32] pool took 0.2 ms (8 GB/s), serial
    column sums read at cache speed. Products (a matmul's operands) are the GEMM rule's."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    reductions = [i for i, info in enumerate(infos or []) if not info.is_injective()]
    if len(reductions) != 1:
        return None
    # injective producers are inlined below; injective consumers (mean's divide, a cast)
    # stay loops over the small output after it
    red, producers = reductions[0], infos[:reductions[0]]
    kinds = infos[red].dom_kind()
    spatial = len(kinds) - len(kinds.lstrip("S"))
    if not spatial or kinds[spatial:] != "R" * (len(kinds) - spatial):
        return None
    block = infos[red].block_rv
    outputs = math.prod(_extent(sch, loop) or 1 for loop in sch.get_loops(block)[:spatial])
    if red < len(infos) - 1 and outputs > MAX_EPILOGUE_OUTPUT:
        return None     # a large output (a convolution's) would leave its epilogue unvectorized
    consumers = [info.block_rv for info in infos[red + 1:]]
    if any(str(write.source.dtype) not in ("float32", "float64")
           for write in sch.get(block).writes):
        return None     # bf16 is legalized to uint16 storage later, which a vector init breaks
    last_spatial = sch.get(block).iter_vars[spatial - 1].var
    if not any(len(read.region) and read.region[-1].min.same_as(last_spatial)
               and int(read.region[-1].extent) == 1 for read in sch.get(block).reads):
        return None     # the input's innermost axis is reduced (a row reduction): left as is
    stmt = sch.get(block)
    iters = [iv.var for iv in stmt.iter_vars[:spatial]]
    reads = [r for r in stmt.reads if not r.source.same_as(stmt.writes[0].source)]
    if parallel and not all(all(any(_uses(rg.min, v) for rg in read.region) for v in iters)
                            for read in reads):
        # not a sum of each output's own column: a product (a matmul's operands miss one
        # output axis each), left to the GEMM rule
        return None
    images = parallel and spatial > 1 and all(
        len(read.region) > 1 and read.region[0].min.same_as(iters[0]) for read in reads)
    try:
        for info in producers:
            sch.compute_inline(info.block_rv)
        loops = sch.get_loops(block)
        if len(loops) != len(kinds) or any(_extent(sch, loop) in (None, 0) for loop in loops):
            return None
        if images and _extent(sch, loops[0]) > 1 and \
                math.prod(_extent(sch, loop) for loop in loops) >= MIN_PARALLEL_ELEMENTS:
            # [image (parallel), reduction..., the rest of the output]
            sch.reorder(loops[0], *loops[spatial:], *loops[1:spatial])
            sch.parallel(loops[0])
            init = sch.decompose_reduction(block, loops[spatial])
            inner = sch.get_loops(init)[1:]
            fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
            total, lanes = _extent(sch, fused), safe_lanes(sch, init, _vector_lanes(target),
                                                           fused)
            if lanes > 1 and total >= lanes and total % lanes == 0:
                sch.vectorize(sch.split(fused, factors=[None, lanes])[1])
            _broadcast_consumers(sch, consumers, outputs, target, parallel)
            return sch
        sch.reorder(*loops[spatial:], *loops[:spatial])
        init = sch.decompose_reduction(block, loops[spatial])
        inner = sch.get_loops(init)
        fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
        total, lanes = _extent(sch, fused), safe_lanes(sch, init, _vector_lanes(target), fused)
        if lanes > 1 and total >= lanes and total % lanes == 0:
            sch.vectorize(sch.split(fused, factors=[None, lanes])[1])
        # the update's inner loop (out[j] += x[r, j]) is left to LLVM's loop vectorizer: TIR's
        # vectorize refuses a loop under a reduction block
        _broadcast_consumers(sch, consumers, outputs, target, parallel)
    except Exception:  # TVM's ScheduleError: a nest this rule does not know; left as is
        return None
    return sch


def _broadcast_consumers(sch, consumers, outputs: int, target, parallel: bool) -> None:
    """The injective blocks after a column reduction that are larger than its output (an
    instance norm's normalisation of every pixel by the per-channel mean: the mean fused with
    it) become one vectorized, parallel loop: left as TVM's scalar nest on one thread they
    ran at 0.8 GFLOP/s ([1, 128, 128, 32]: 3.8 ms). Smaller ones (mean's divide) stay."""
    large = [b for b in consumers if _work(sch, b) > outputs]
    if not large:
        return
    for block in large[:-1]:
        sch.compute_inline(block)
    _parallel_vectorize(sch, large[-1], target, parallel)


def _single_row(func, target, parallel: bool):
    """A kernel whose reductions make one value each (softmax or layer norm of one row, after
    normalize_prim_func dropped the unit row axis): dlight's CPU Reduction takes the last
    block's column loop as its parallel row loop and recomputes the whole row's max and sum
    under every column (a softmax of [1, 1000]: 7.5 ms, O(n^2)). Here each block keeps its
    own loop nest, the elementwise ones vectorized (and parallel when large): 1000 columns
    are a few microseconds."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    sch = s_tir.Schedule(func)
    try:
        infos = normalize_prim_func(sch)
    except Exception:  # noqa: BLE001 - TVM raises several types for foreign PrimFuncs
        return None
    reductions = [info for info in infos or [] if not info.is_injective()]
    if not reductions or any(
            math.prod(static_int(iv.dom.extent) or 2 for iv in sch.get(info.block_rv).iter_vars
                      if iv.iter_type == 0) != 1 for info in reductions):
        return None
    try:
        for info in infos:
            if info.is_injective() and not _touches_bool(sch, info.block_rv):
                _parallel_vectorize(sch, info.block_rv, target, parallel)
    except Exception:  # noqa: BLE001 - TVM's ScheduleError: left as TVM's loop nest
        return None
    return sch


def _row_kernel(func, target, parallel: bool):
    """Row kernels (softmax, layer norm: reductions along the last axis and elementwise
    blocks, every block over [rows, width]): every block computed per row under one parallel
    row loop. dlight's CPU Reduction, which took them before, leaves each row's sum one
    serial chain of float adds (TVM does not reassociate): a LayerNorm over [197, 768] took
    150 us, latency-bound. Here a width the vectors divide is split by them, the elementwise
    blocks vectorized and each reduction rfactored into one partial result per lane (16
    independent chains LLVM makes one vector), then combined. A block whose width they do
    not divide is left to LLVM's loop vectorizer, a vector body and a scalar tail: dlight
    split it by the full lanes with a predicate, which TIR cannot vectorize, and every block
    ran scalar (ViT's softmax: 157 -> 97 us). Blocks may differ in width (fast_math's
    softmax reduces rows of 197 over 208, the padding -inf, and writes 197). Sums come out
    in another order than a serial loop's, as any vectorized library's do."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    sch = s_tir.Schedule(func)
    try:
        infos = normalize_prim_func(sch)
    except Exception:  # noqa: BLE001 - TVM raises several types for foreign PrimFuncs
        return None
    if not infos or len(infos) < 2 or bool(infos[-1].is_reduction()) or all(
            info.is_injective() for info in infos):
        return None
    last = infos[-1].block_rv
    loops = sch.get_loops(last)
    width = _extent(sch, loops[-1]) if loops else None
    lanes = _vector_lanes(target)
    if width is None or width < lanes or len(loops) < 2:
        return None
    row_extents = [_extent(sch, lp) for lp in loops[:-1]]
    per_row = []   # blocks of one value per row (a mean) have no width loop
    widths = {}   # a block's own width: fast_math's softmax reduces over a rounded-up row
    for info in infos:   # every block spans [rows..., a width] or [rows...]
        extents = [_extent(sch, lp) for lp in sch.get_loops(info.block_rv)]
        if extents == row_extents:
            per_row.append(info)
        elif not extents or extents[:-1] != row_extents or extents[-1] is None:
            return None
        else:
            widths[info.block_rv] = extents[-1]
    scalar = any(_touches_bool(sch, i.block_rv) for i in infos)

    def vectors(info):
        return not scalar and widths.get(info.block_rv, 1) % lanes == 0

    try:
        blocks, partials = [], []
        for info in infos[:-1]:   # rfactor before compute_at (TVM's check fails after)
            if vectors(info) and not info.is_injective():
                inner = sch.get_loops(info.block_rv)[-1]
                partial = sch.rfactor(sch.split(inner, factors=[None, lanes])[1], 0)
                partials.append(partial)
                blocks.append(partial)
            blocks.append(info.block_rv)
        last_loops = sch.get_loops(last)
        rows = sch.fuse(*last_loops[:-1])
        if parallel:
            sch.parallel(rows)
        for block in reversed(blocks):
            sch.compute_at(block, rows, preserve_unit_loops=False)
        for info in infos:
            if info.is_injective() and info not in per_row and vectors(info):
                inner = sch.get_loops(info.block_rv)[-1]
                sch.vectorize(sch.split(inner, factors=[None, lanes])[1])
        for partial in partials:   # [lane, k] -> [k, lane]: lanes independent, unrolled
            lane, k = sch.get_loops(partial)[-2:]
            sch.reorder(k, lane)
            sch.unroll(lane)
            init = sch.decompose_reduction(partial, k)
            sch.vectorize(sch.get_loops(init)[-1])
    except Exception:  # noqa: BLE001 - TVM's ScheduleError: a nest this rule does not know
        return None
    return sch


def _work(sch, block) -> int:
    extents = [_extent(sch, loop) or 1 for loop in sch.get_loops(block)]
    return math.prod(extents)


def injective_rule(parallel: bool = True):
    """Elementwise and layout kernels: inlined, fused, outer loop parallel, inner vectorized."""
    return _rule(_injective, parallel)


def reduction_rules(parallel: bool = True) -> list:
    """SingleRow, RowKernel, dlight's CPU Reduction, then OuterParallel for anything left
    (none when not parallel: TVM's loop nests stay as they are)."""
    from tvm.s_tir.dlight.cpu import Reduction

    return ([_rule(_single_row, parallel), _rule(_row_kernel, parallel), Reduction(),
             _rule(_outer_parallel, parallel)] if parallel else [])


def schedule_rules(parallel: bool = True):
    from .depthwise import schedule_depthwise
    from .gemm import schedule_gemm
    from .narrow_conv import schedule_rows
    from .pooling import schedule_pool
    from .winograd import schedule_winograd

    return ([_rule(schedule_winograd, parallel), injective_rule(parallel), _rule(schedule_rows, parallel),
             _rule(schedule_depthwise, parallel),
             _rule(schedule_pool, parallel), _rule(_column_reduction, parallel),
             _rule(schedule_gemm, parallel)] + reduction_rules(parallel))


def legalize_passes(target) -> list:
    """TVM's cpu_generic legalization, except that a reshape with a dynamic dim stays a
    Relax reshape, which the VM performs as a view of the same memory (vm.builtin.reshape):
    TOPI's reshape kernel re-derives each element's index through floordiv/floormod chains
    over the dims, and with dims known only at run time (the shape computed by the model)
    LLVM took 45 s and then all 24 GiB of this machine on one 5-D reshape."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    default = tvm.ir.Op.get("relax.reshape").get_attr("FLegalize")

    def reshape(bb, call):
        if _static(call.args[0]) and _static(call):
            return default(bb, call)
        return call

    passes = cpu.legalize_passes(target)
    return [relax.transform.LegalizeOps({"relax.reshape": reshape})
            if p.info.name == "LegalizeOps" else p for p in passes]


def _static(expr) -> bool:
    from tvm import relax, tirx

    shape = getattr(getattr(expr, "ty", None), "shape", None)
    return isinstance(shape, relax.ShapeExpr) and all(
        isinstance(d, tirx.IntImm) for d in shape.values)


def pipeline(target, parallel: bool = True, database=None, flops: dict | None = None):
    """TVM's cpu_generic phases with, after fusion, the tuned schedules of `database` (a
    MetaSchedule database of records for this exact target, see compiler/tuning) and the
    default schedules above for the rest; with `parallel` False, TVM's kernels stay on one
    thread (vectorized only). `flops`, when given, receives each kernel's FLOPs (TVM's
    estimate, before scheduling), which `bench --profile` divides by the kernel's time."""
    import contextlib

    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir.dlight import ApplyDefaultSchedule

    from .ieee import vectorizable_isnan

    vectorizable_isnan()   # fast_math's and ONNX IsNaN's kernels vectorize too

    @tvm.transform.module_pass(opt_level=0, name="AnychipCpuPipeline")
    def _pipeline(mod, _ctx):
        with target, (database if database is not None else contextlib.nullcontext()):
            tuned = [relax.transform.MetaScheduleApplyDatabase()] if database is not None else []
            counted = [_count_flops(flops)] if flops is not None else []
            passes = (cpu.library_dispatch_passes(target) + legalize_passes(target)
                      + counted + tuned + [ApplyDefaultSchedule(*schedule_rules(parallel))]
                      + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def _reduction_flops(func) -> float:
    """2 FLOPs per iteration of each reduction block of an unscheduled kernel (a product's
    multiply-add; its elementwise epilogue uncounted): 0 when an extent is symbolic or the
    kernel cannot be read."""
    from tvm import s_tir

    try:
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - a kernel without a root block
        return 0.0
    total = 0.0
    for block in blocks:
        stmt = sch.get(block)
        if stmt.init is None:
            continue
        extents = [static_int(iv.dom.extent) for iv in stmt.iter_vars]
        if any(e is None for e in extents):
            return 0.0
        total += 2.0 * math.prod(extents)
    return total


def _count_flops(sink: dict):
    """A pass that leaves the module as it is and puts each kernel's estimated FLOPs in
    `sink` (by the kernel's name, as the VM calls it); for kernels TVM cannot estimate (a Let
    of fast_math's polynomials: every convolution with a SiLU or GELU epilogue), the
    multiply-adds of their reductions (_reduction_flops)."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    @tvm.transform.module_pass(opt_level=0, name="AnychipCountFlops")
    def _count(mod, _ctx):
        for gvar, func in mod.functions.items():
            if isinstance(func, tvm.tirx.PrimFunc):
                try:
                    value = float(estimate_tir_flops(tvm.IRModule({"main": func})))
                except Exception:  # noqa: BLE001 - TVM has no rule for some nodes
                    value = _reduction_flops(func)
                if value > 0:
                    sink[gvar.name_hint] = value
        return mod

    return _count
