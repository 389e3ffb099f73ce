"""What the host's register-tiled schedules (depthwise.py, gemm.py, pooling.py) share: a
kernel of one reduction block between injective producers and consumers, after FuseOps.
Its zero pad stays one vectorized pass (inlined, every tap would test its bounds), other
producers are inlined; its consumers become one epilogue computed per tile, so the tile's
slice of the intermediate is the accumulator. The accumulator's scope is "global": TVM puts
a small constant-size global buffer on the stack, where LLVM keeps it in registers; a
"local" one is a heap workspace, every step a load and a store (docs/tvm-notes.md)."""

from __future__ import annotations

from .elementwise_loops import _parallel_vectorize
from .lanes import dividing_lanes, vector_lanes
from .tir_walk import static_int

# Below this many iterations of its reduction block (a GEMM's multiply-adds, a pooling's or
# a depthwise convolution's taps) a kernel stays on one thread: a launch of TVM's thread pool
# cost ~6 us with its workers spinning and ~15 us after a pause, more than a [4, 128] x [128,
# 128] layer's work (zoo:mlp: 36 -> 23 us a run with its GEMMs serial, ONNX Runtime 24).
# Between a network's many kernels the workers stay awake and parallel pays sooner: at 2^20
# EfficientNet ran 3-4% slower than all parallel, at 2^17 within 1.5% (docs/performance.md)
MIN_PARALLEL_ITERATIONS = 1 << 17


def one_reduction(func):
    """(schedule, reduction block, producer infos, consumer infos) of `func` after dlight's
    normalize_prim_func, or None when it has not exactly one reduction block."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    sch = s_tir.Schedule(func)
    try:
        infos = normalize_prim_func(sch)
    except Exception:  # noqa: BLE001 - TVM raises several types for foreign PrimFuncs
        return None
    reductions = [i for i, info in enumerate(infos or []) if not info.is_injective()]
    if len(reductions) != 1:
        return None
    red = reductions[0]
    return sch, infos[red].block_rv, infos[:red], infos[red + 1:]


def worth_parallel(sch, block) -> bool:
    """Whether `block` (a reduction) does enough work for the thread pool: at least
    MIN_PARALLEL_ITERATIONS iterations, or a symbolic extent (taken to be large)."""
    total = 1
    for iv in sch.get(block).iter_vars:
        extent = static_int(iv.dom.extent)
        if extent is None:
            return True
        total *= extent
    return total >= MIN_PARALLEL_ITERATIONS


def threads(target) -> int:
    """Threads TVM's pool runs a parallel loop on: the target's `num-cores`, which the
    runtime sizes the pool by (compiler.dispatch.size_tvm_pool); 1 when the target does not
    say."""
    try:
        return max(int(target.attrs["num-cores"]), 1)
    except (KeyError, TypeError, ValueError, AttributeError):
        return 1


def balance(units: int, workers: int) -> float:
    """Share of `workers` busy when `units` equal iterations are split among them in whole
    iterations: 7 column panels on 2 threads keep them 7/8 busy (one thread runs 4)."""
    return units / (workers * -(-units // workers)) if units > 0 and workers > 0 else 1.0


# a parallel loop whose iterations keep the threads less busy than this (balance) is split
# finer when a finer loop balances better (gemm._uneven, depthwise._apply)
EVEN = 0.95


def inline_producers(sch, producers, is_pad=lambda stmt: True):
    """Inline every producer but the first pad block (by TOPI's name, and `is_pad`), which
    is returned (None when there is none) to be scheduled as its own pass."""
    pad = None
    for info in producers:
        stmt = sch.get(info.block_rv)
        if pad is None and stmt.name_hint.startswith("pad") and is_pad(stmt):
            pad = info.block_rv
        else:
            sch.compute_inline(info.block_rv)
    return pad


def epilogue_per_tile(sch, block, consumers, loop, target=None, parallel: bool = False):
    """The consumers inlined into the last one, computed under `loop` (a tile); without
    consumers, a write-back block there. Returns the block that writes the tile.

    A consumer that broadcasts the result to a larger tensor (a squeeze-excite gate:
    conv -> bias -> sigmoid -> multiply with the [N, H, W, C] feature map) ends the tile's
    epilogue: what comes before it is computed per tile at the reduction's size, what comes
    after is one elementwise pass of its own (vectorized, parallel when `parallel` and large).
    Inlined into the broadcast, the gate's sigmoid was computed once per pixel of the map
    (EfficientNet at batch 8: 3.2 million sigmoids for 256 gate values, on one thread)."""
    cut = _first_broadcast(sch, block, consumers)
    tail = consumers[cut:]
    consumers = consumers[:cut]
    for info in consumers[:-1]:
        sch.compute_inline(info.block_rv)
    if consumers:   # the intermediate shrinks to one tile: the accumulator
        out_block = consumers[-1].block_rv
    else:
        out_block = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(out_block, loop)
    if tail:
        for info in tail[:-1]:
            sch.compute_inline(info.block_rv)
        _parallel_vectorize(sch, tail[-1].block_rv, target, parallel)
    return out_block


def _first_broadcast(sch, block, consumers) -> int:
    """Index of the first consumer whose output has more elements than the reduction's
    (len(consumers) when none, or when a size is symbolic)."""
    def size(block_rv):
        writes = sch.get(block_rv).writes
        if len(writes) != 1:
            return None
        total = 1
        for extent in writes[0].source.shape:   # a TensorRegion (TVM 0.27)
            value = static_int(extent)
            if value is None:
                return None
            total *= value
        return total

    reduced = size(block)
    if reduced is None:
        return len(consumers)
    for i, info in enumerate(consumers):
        out = size(info.block_rv)
        if out is None:
            return len(consumers)
        if out > reduced:
            return i
    return len(consumers)


# output rows whose padded input a kernel makes together, inside its parallel loop (largest
# divisor of the output height up to this): the padded copy of a block stays in cache instead
# of a padded copy of the whole input going through memory and back first. EfficientNet at
# batch 8 (3x3 stride 2 over [8, 112, 112, 96]: 39 MB padded) 61.6 -> 53.9 ms, MobileNet-v3
# at batch 8 26.9 -> 22.8, VGG-19 192.1 -> 188.6, ResNet's max pool at batch 8 1.93 -> 1.13
# ms alone (2 Zen 4 cores, docs/performance.md). Per single output row (3x the copying at
# stride 1) was slower at batch 1
PAD_ROWS = 8


def pad_block_rows(height: int, images: int = 1, min_rows: int = 1,
                   min_blocks: int = 1, workers: int = 1) -> int | None:
    """Rows of a padded block (PAD_ROWS): the largest divisor of `height` from `min_rows` up
    that leaves at least `min_blocks` blocks over `images` images, preferring one whose
    blocks keep `workers` threads evenly busy (balance: 56 rows in blocks of 7, 8 blocks,
    rather than of 8, 7 blocks on 2 threads); None when there is none."""
    fits = [d for d in range(min_rows, PAD_ROWS + 1)
            if height % d == 0 and images * height // d >= min_blocks]
    even = [d for d in fits if balance(images * height // d, workers) >= EVEN]
    return max(even or fits) if fits else None


def pad_per_block(sch, pad, loop, target) -> None:
    """The pad block computed under `loop` (a block of output rows): only the input rows that
    block reads, vectorized along the channels."""
    sch.compute_at(pad, loop)
    inner = sch.get_loops(pad)[-1]
    lanes = dividing_lanes(static_int(sch.get(inner).extent), vector_lanes(target))
    sch.vectorize(sch.split(inner, factors=[None, lanes])[1])


def vectorized_pass(sch, block, target, parallel: bool) -> None:
    """`block`'s loops as one pass (a pad), vectorized along its innermost axis (the
    channels of NHWC) by the widest lanes dividing it, the loops above it kept as loops
    (the outer two fused and parallel when `parallel`). Fusing every loop into one put a
    division and a modulo per vector into each index, and vectors across image rows made
    the bounds test differ per lane: a 3x3 max pool's pad of 114x114x24 took 400 us.
    Innermost axes no 4 lanes divide (an image's 3 channels) are fused with the one above
    (contiguous in both buffers) and vectorized across."""
    from .tir_walk import static_int

    loops = sch.get_loops(block)
    full = vector_lanes(target)
    if len(loops) > 1 and dividing_lanes(static_int(sch.get(loops[-1]).extent), full) < 4:
        loops = [*loops[:-2], sch.fuse(*loops[-2:])]
    lanes = dividing_lanes(static_int(sch.get(loops[-1]).extent), full)
    outer, inner = sch.split(loops[-1], factors=[None, lanes])
    sch.vectorize(inner)
    if parallel:
        above = [*loops[:-1], outer]
        sch.parallel(sch.fuse(*above[:2]) if len(above) > 1 else above[0])
