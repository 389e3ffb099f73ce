"""A register-tiled schedule for GEMM-shaped kernels the host keeps in TVM: matmuls by a weight
whose last axis is the output's (x[..., K] @ W[K, N]) and NHWC convolutions whose weight is
HWIO (1x1 ones are GEMMs of [pixels, C] by [C, O]; grouped ones a GEMM per group).

TVM's default loop nest for these reads the weight down a column (stride N per multiply) with
the reduction innermost: a [4, 128] x [128, 128] matmul took 55 us, 4.7 GFLOP/s. The schedule
below is the classic outer-product micro-kernel: a tile of `rows` output pixels by `cols`
output channels (one or two vector registers wide) is accumulated in registers while the
reduction runs over it; each step loads the weight's row of the tile as vectors (contiguous
in HWIO/[K, N]), broadcasts one input value per pixel, and does rows x vectors FMAs. The bias,
residual and activation (the fused consumers) are applied to the tile before it is stored.
Serial, on one Zen 4 core: 97-117 GFLOP/s for mobile networks' 1x1 convolutions, where
oneDNN's call took 125-180 us for 7 MFLOP on two (docs/performance.md).

Tiles never straddle the innermost pixel axis (`rows` divides it, or the last tile's extra
rows are predicated off) nor a group (`cols` divides the group's width): a tile's index
region is then a box, which reverse_compute_at and the compacted accumulator need (a tile
crossing image rows computed the epilogue of pixels not yet accumulated). The accumulator
lives in a "global"-scope buffer of one tile: TVM puts a small constant-size buffer on the
stack, where LLVM keeps it in registers (docs/tvm-notes.md).

It takes a PrimFunc of one float32 reduction block with static shapes whose last spatial axis
n is read by exactly one input, as that input's last index (the weight), and by no other
(except a grouped convolution's data, through n's group): anything else is left to the
other rules. The weight may vary along outer batch axes (attention's Q K^T and P V, a
product per head, K^T laid out by its own transpose kernel); tiles then stay in one batch.
A constant weight packed in panels (packed_weights.py: read as [n // c, ..., n % c]) gives
the tile its columns: c, one contiguous stream per tile.
"""

from __future__ import annotations

from .lanes import dividing_lanes, vector_lanes
from .prefetch import prefetch_epilogue_inputs
from .reduction_kernel import (EVEN, balance, epilogue_per_tile, inline_producers,
                               one_reduction, pad_block_rows, pad_per_block, threads,
                               vectorized_pass, worth_parallel)
from .tir_walk import static_int as _static, uses as _uses

# float32 vector registers by vector width (AVX-512 has 32, AVX2 and NEON 16)
REGISTERS = {16: 32, 8: 16, 4: 16}
# output pixels per tile: up to ROWS, or up to MAX_ROWS (the register budget decides below
# it) when no divisor of the map's width from MIN_ROWS to ROWS exists (tile)
ROWS = 8
MIN_ROWS = 4
MAX_ROWS = 28
# accumulators of a tile (rows x vectors) when the tile streams the weight past a tile of
# pixels (the data is the larger operand): on 2 Zen 4 cores, 1x1 convolutions with 16 (8 x 2)
# ran at 145-210 GFLOP/s where 7 x 2 or 8 x 1 ran at 204-231 (K 16-128: 112x112 16->64, 56x56
# 32/64/128->64), and 13 x 2 on SqueezeNet's 13x13 maps 121-181 against 13 x 1's 161-232;
# from K 256 up they tie. A weight-first tile (the weight larger: transformers' GEMMs of 128
# tokens) keeps 16: [128, 256] x [256, 1024] 208 GFLOP/s at 8 x 2, 189 at 8 x 1
ACCUMULATORS = 14
# ... and when the last tile's rows are predicated off (no divisor of the extent fits): 16
# (8 x 2) ran at 172-188 GFLOP/s where 6 x 2 ran at 217-224 ([197, 768] x [768, 192], ViT)
PREDICATED_ACCUMULATORS = 12
# ... and of a tile holding a whole narrow row (narrow_row): 7 x 3 of 8 lanes (21) ran at
# 221 GFLOP/s, 4 x 3 at 214; 4 x 5 at 228, 7 x 5 (35) at 158
NARROW_ACCUMULATORS = 21
# column panels a parallel GEMV's tile leaves at least (two a thread on 2 cores: [1, 1280] x
# [1280, 1008] cold ran 146 us in 9 panels, 171 in 3)
MIN_GEMV_PANELS = 4
# a padded convolution whose tiles stream the weight past pixels pads its input per block of
# output rows inside the parallel loop (reduction_kernel.PAD_ROWS), blocks of MIN_PAD_ROWS
# rows at least (less copying at 3x3) leaving MIN_PAD_BLOCKS for the threads; otherwise one
# vectorized pass
MIN_PAD_ROWS = 4
MIN_PAD_BLOCKS = 8
# a GEMV's weight from this size up is streamed with wide tiles (_gemv_vectors)
STREAMED_GEMV_BYTES = 256 << 10


def _group_width(stmt, data, weight, n_extent: int) -> int | None:
    """Output channels per group of a grouped NHWC convolution (TOPI's group_conv2d_nhwc:
    data [N, H, W, C], weight [kh, kw, C/g, O]); None when `stmt` is not one."""
    if not stmt.name_hint.startswith("group_conv2d_nhwc"):
        return None
    data = [_static(d) for d in data.shape]
    weight = [_static(d) for d in weight.shape]
    if len(data) != 4 or len(weight) != 4 or not weight[2] or data[3] % weight[2]:
        return None
    groups = data[3] // weight[2]
    return n_extent // groups if groups > 1 and n_extent % groups == 0 else None


def _analyse(sch, block):
    """(spatial count, batch axes, group width or None, data buffer, weight buffer, panel
    columns or None) when `block` has the GEMM shape described in the module docstring, else
    None. Batch axes are the outer spatial axes the weight varies along (a product per
    attention head); a weight packed in panels (packed_weights.py) has none."""
    stmt = sch.get(block)
    if len(stmt.writes) != 1 or str(stmt.writes[0].source.dtype) != "float32":
        return None
    kinds = "".join("S" if iv.iter_type == 0 else "R" for iv in stmt.iter_vars)
    spatial = len(kinds) - len(kinds.lstrip("S"))
    if not spatial or kinds[spatial:] != "R" * (len(kinds) - spatial) or spatial == len(kinds):
        return None
    if any(_static(iv.dom.extent) is None for iv in stmt.iter_vars):
        return None
    n = stmt.iter_vars[spatial - 1].var
    out = stmt.writes[0]
    if not out.region or not (out.region[-1].min.same_as(n)
                              and _static(out.region[-1].extent) == 1):
        return None
    weights, data, grouped, batch, panel = [], [], False, 0, None
    reduced = [iv.var for iv in stmt.iter_vars[spatial:]]
    for read in stmt.reads:
        if read.source.same_as(out.source):
            continue
        last = read.region[-1].min if len(read.region) else None
        columns = _panel(read, n)
        if columns:   # [n // c, ..., n % c]: packed in panels (packed_weights.py)
            if any(_uses(r.min, n) for r in read.region[1:-1]):
                return None
            weights.append(read.source)
            panel = columns
        elif last is not None and last.same_as(n):
            if any(_uses(r.min, n) for r in read.region[:-1]):
                return None
            # the weight may vary along outer "batch" axes (attention's heads: a product per
            # head; broadcast ones too), never along the pixels a tile's rows run over: the
            # batch axes end at the last axis it varies along
            varying = [any(_uses(r.min, iv.var) for r in read.region)
                       for iv in stmt.iter_vars[:spatial - 1]]
            batch = max((i + 1 for i, v in enumerate(varying) if v), default=0)
            weights.append(read.source)
        elif any(_uses(r.min, v) for r in read.region for v in reduced):
            data.append(read.source)
            grouped |= any(_uses(r.min, n) for r in read.region)   # n's group: the channel
    if len(weights) != 1 or len(data) != 1:   # no data operand: a column sum, not a product
        return None
    n_extent = _static(stmt.iter_vars[spatial - 1].dom.extent)
    width = _group_width(stmt, data[0], weights[0], n_extent)
    if grouped and width is None or panel and (width or batch or n_extent % panel):
        return None
    return spatial, batch, width, data[0], weights[0], panel


def _panel(read, n) -> int | None:
    """c when `read` indexes its buffer [n // c, ..., n % c] (a weight packed in panels of
    c columns), else None."""
    from tvm import tirx

    if len(read.region) < 3:
        return None
    first, last = read.region[0].min, read.region[-1].min
    if not (isinstance(last, tirx.FloorMod) and isinstance(first, tirx.FloorDiv)):
        return None
    c = _static(last.b)
    if not c or not last.a.same_as(n) or not first.a.same_as(n) or _static(first.b) != c:
        return None
    return c


def schedule_gemm(func, target, parallel: bool):
    """The schedule described in the module docstring, or None when `func` is not a
    GEMM-shaped kernel (with its pad and elementwise epilogue)."""
    kernel = one_reduction(func)
    if kernel is None:
        return None
    sch, block, producers, consumers = kernel
    try:
        found = _analyse(sch, block)
        if found is None:
            return None
        return _apply(sch, block, *found, producers, consumers, target, parallel)
    except Exception:  # noqa: BLE001 - a ScheduleError, a nest this rule does not know
        return None


def tile(pixels: int, width: int, lanes: int, registers: int,
         accumulators: int | None = None, vectors: int | None = None) -> tuple[int, int]:
    """(rows, vectors) of the register tile: rows dividing the innermost pixel extent,
    one or two vectors of output channels, rows x vectors
    accumulators plus the weight's vectors and one broadcast within the registers, and at
    most `accumulators` of them (ACCUMULATORS); the most FMAs per load wins. `vectors`,
    when given, is fixed (a weight packed in panels of that many vectors: packed_weights.py).
    Rows stop at ROWS (more made DenseNet-121's compile 29% longer and
    its run no faster) unless that leaves fewer than MIN_ROWS: a 13-wide map takes 13 rows
    of one vector rather than 1 row of two. Extents with no divisor up to MAX_ROWS at all
    (ViT's 197 tokens) take ROWS rows that do not divide them: the last tile's rows past
    the end are predicated off (1 row of two vectors ran at 25 GFLOP/s, 8 at 170), with at
    most PREDICATED_ACCUMULATORS accumulators (6 rows of two vectors). Only
    then: predicated tiles of a convolution ran slower than 2 dividing rows (117 us
    against 67 for ShuffleNet's 14x14 grouped 1x1)."""
    fixed = vectors

    def best(cap: int, dividing: bool = True) -> tuple[int, int, int]:
        found = (0, 1, 1)
        for vectors in (2, 1):   # (one output row, a GEMV: _gemv_vectors)
            if width % (vectors * lanes) or vectors != (fixed or vectors):
                continue
            fit = min(cap, (registers - vectors - 1) // vectors)
            if accumulators:
                fit = min(fit, accumulators // vectors)
            if not dividing:
                fit = min(fit, PREDICATED_ACCUMULATORS // vectors)
            rows = _rows(pixels, fit, dividing)
            found = max(found, (rows * vectors, vectors, rows))
        return found

    choice = best(ROWS)
    if choice[2] < MIN_ROWS and pixels > 1:
        choice = max(choice, best(MAX_ROWS))
    if choice[2] == 1 and pixels > ROWS:
        choice = best(ROWS, dividing=False)
    return choice[2], choice[1]


def narrow_row(pixels: int, width: int, lanes: int, full: int) -> tuple[int, int] | None:
    """(rows, vectors) of a tile holding a whole output row of a narrow projection, or None.
    A width of 3 or 5 vectors of `lanes` narrower than the target's (`full`: 24 or 40
    channels on AVX-512) would get tiles of one vector (one broadcast per FMA, and a
    register budget of AVX2's 16 for 8-lane vectors where AVX-512 has 32); all of the row's
    vectors for up to NARROW_ACCUMULATORS accumulators instead. On 2 Zen 4 cores: 56x56
    144->24 191 -> 221 GFLOP/s (7 x 3), 28x28 240->40 191 -> 228 (4 x 5). Rows divide the
    pixels, MIN_ROWS at least."""
    per = width // lanes if lanes else 0
    if lanes >= full or width % lanes or per not in (3, 5):
        return None
    registers = REGISTERS.get(full, 16)
    fit = min(ROWS, NARROW_ACCUMULATORS // per, (registers - per - 1) // per)
    rows = _rows(pixels, fit)
    return (rows, per) if rows >= MIN_ROWS else None


def _gemv_vectors(width: int, lanes: int, registers: int, parallel: bool,
                  streamed: bool) -> int:
    """Vectors of a GEMV's tile (one output row: a classifier, a squeeze-excite layer). A
    `streamed` weight (STREAMED_GEMV_BYTES or more) is read once per run, mostly from
    memory: tiles of 1-4 vectors read it in narrow column panels (a cache line per row per
    panel), 12-14 GB/s cold on one Zen 4 core, so it takes the most vectors that divide the
    width within most of the registers (an accumulator each): 15-21 vectors read 17-30 GB/s
    cold and ran 1.5x faster warm ([1, 1280] x [1280, 1008]: 74 -> 50 us). In parallel, at
    least MIN_GEMV_PANELS panels share the threads. A small weight keeps up to 4 vectors
    (EfficientNet's squeeze-excite expansions, K <= 48, ran 2-4% slower in-model with wider
    tiles)."""
    per_row = width // lanes
    cap = max(registers - 8, 4) if streamed else 4   # registers left for LLVM: no spills
    fit = [v for v in range(1, min(per_row, cap) + 1) if per_row % v == 0]
    if not streamed:
        fit = [v for v in fit if v in (1, 2, 4)]
    if parallel:
        fit = [v for v in fit if per_row // v >= MIN_GEMV_PANELS] or fit[:1]
    return fit[-1]


def _rows(pixels: int, fit: int, dividing: bool = True) -> int:
    """The most rows up to `fit` that divide `pixels`, or (not `dividing`) `fit` itself."""
    if not dividing:
        return min(fit, pixels)
    return max(d for d in range(1, fit + 1) if pixels % d == 0)


def ragged_rows(width: int, lanes: int) -> bool:
    """Whether the tile's rows are one ragged vector (_ragged_tile) rather than vectors of
    the widest dividing lanes: when no vector of 8 float32 (a full AVX2 FMA; Zen 4 runs
    AVX-512 at the same rate) divides the width and an even width lets LLVM split it."""
    return dividing_lanes(width, lanes) < min(lanes, 8) and width % 2 == 0


def _ragged_tile(pixels: int, width: int, lanes: int, registers: int) -> tuple[int, int]:
    """(rows, cols) of the tile for a width that no vector of 8 float32 divides (a
    ShuffleNet group of 34 or 68 channels): its vectors would be 2 or 4 lanes wide, an
    eighth or a quarter of what an FMA does. One "vector" of `cols` lanes instead, `cols` a
    divisor of the width, which LLVM splits into full registers and a short tail
    (34 -> 16 + 16 + 2): ceil(cols / lanes) registers a row. The most useful lanes per
    instruction (FMAs, weight loads, broadcasts) within the registers wins. LLVM's SLP
    vectorizer builds such rows well when they are two power-of-two pieces of at least 2
    lanes (10, 20, 34, 36, 68: 83-107 GFLOP/s on one Zen 4 core) and badly otherwise
    (17 = 16 + 1: 12 GFLOP/s; 50 = 32 + 16 + 2: 12; 52: 13), so only those are tried."""
    found = (0.0, 1, width)
    for cols in range(2, min(width, 5 * lanes) + 1, 2):
        if width % cols or bin(cols).count("1") > 2:
            continue
        regs = -(-cols // lanes)
        room = (registers - regs - 1) // regs
        fit = min(ROWS, room)
        if fit < 1:
            continue
        rows = _rows(pixels, fit)
        if rows == 1 and pixels > 1:   # as tile: up to MAX_ROWS, else predicated rows
            rows = _rows(pixels, min(MAX_ROWS, room))
            rows = rows if rows > 1 else min(fit, pixels)
        found = max(found, (rows * cols / (rows * regs + regs + rows), rows, cols))
    return found[1], found[2]


def _bytes(buffer) -> int:
    size = 4
    for d in buffer.shape:
        size *= _static(d) or 1
    return size


def _apply(sch, block, spatial, batch, group_width, data, weight, panel, producers,
           consumers, target, parallel):
    loops = sch.get_loops(block)
    if len(loops) != len(sch.get(block).iter_vars):
        return None
    may_parallel, parallel = parallel, parallel and worth_parallel(sch, block)
    pixels, n, window = list(loops[:spatial - 1]), loops[spatial - 1], loops[spatial:]
    # a convolution's zero pad stays one vectorized pass (inlined, every tap would test its
    # bounds); an identity "pad" (a 1x1 or unpadded convolution) and anything else inline
    pad = inline_producers(sch, producers, _pads)
    width = _static(sch.get(n).extent)
    full = vector_lanes(target)
    lanes = dividing_lanes(group_width or width, full)
    if len(pixels) == batch:   # one output row (a GEMV): a unit pixel loop to tile over
        pixels.append(sch.add_unit_loop(n))
    extent = _static(sch.get(pixels[-1]).extent)
    # the larger operand is read once from memory: a weight larger than the data (deep
    # layers on small maps: [3, 3, 512, 512] on 7x7) keeps each column panel in cache for
    # every tile of pixels; otherwise each tile of pixels stays while the panels stream by
    weight_first = _bytes(weight) > _bytes(data) and not batch
    narrow = None if group_width else narrow_row(extent, width, lanes, full)
    if panel:   # the panel's columns are the tile's
        vectors = panel // lanes
        whole_row = narrow is not None and narrow[1] == vectors
        if panel % lanes or vectors > 2 and not whole_row:
            return None
        if extent == 1:
            rows = 1
        elif whole_row:
            rows = narrow[0]
        else:
            rows = tile(extent, width, lanes, REGISTERS.get(lanes, 16),
                        None if weight_first else ACCUMULATORS, vectors)[0]
    elif narrow is not None:
        rows, vectors = narrow
    elif ragged_rows(group_width or width, full):
        rows, lanes = _ragged_tile(extent, group_width or width, full,
                                   REGISTERS.get(full, 16))
        vectors = 1
    elif extent == 1:
        rows, vectors = 1, _gemv_vectors(group_width or width, lanes,
                                          REGISTERS.get(lanes, 16), parallel,
                                          _bytes(weight) >= STREAMED_GEMV_BYTES)
    else:
        rows, vectors = tile(extent, group_width or width, lanes, REGISTERS.get(lanes, 16),
                              None if weight_first else ACCUMULATORS)
    cols = vectors * lanes
    p_outer, p_inner = sch.split(pixels[-1], factors=[None, rows])
    row_block = None
    if pad is not None and not weight_first and not group_width and len(pixels) > 1:
        # the padded input made per block of output rows inside the parallel loop (see above)
        images = 1
        for loop in pixels[:-2]:
            images *= _static(sch.get(loop).extent)
        rb = pad_block_rows(_static(sch.get(pixels[-2]).extent), images, MIN_PAD_ROWS,
                            MIN_PAD_BLOCKS, threads(target) if parallel else 1)
        if rb is not None:
            h_outer, h_inner = sch.split(pixels[-2], factors=[None, rb])
            row_block = sch.fuse(*pixels[:-2], h_outer) if len(pixels) > 2 else h_outer
            tile_rows = sch.fuse(h_inner, p_outer)
    if row_block is None:
        tile_rows = sch.fuse(*pixels[:-1], p_outer) if len(pixels) > 1 else p_outer
    if group_width:   # a tile's channels stay in one group (its data index is then fixed)
        group, n_outer, n_inner = sch.split(n, factors=[None, group_width // cols, cols])
    else:
        n_outer, n_inner = sch.split(n, factors=[None, cols])
    outer = [n_outer, tile_rows] if weight_first else [tile_rows, n_outer]
    outer = [group, *outer] if group_width else outer
    outer = [row_block, *outer] if row_block is not None else outer
    vec, lane = sch.split(n_inner, factors=[vectors, lanes])
    sch.reorder(*outer, *window, p_inner, vec, lane)
    sch.unroll(p_inner)
    sch.unroll(vec)
    sch.unroll(lane)
    if parallel and row_block is None and not group_width and _uneven(
            sch, outer, threads(target)):
        # every tile its own parallel iteration (see _uneven); the tile loop is the fused one
        outer = [sch.fuse(*outer)]
        sch.parallel(outer[0])
    elif parallel and row_block is not None:   # the blocks of rows (each pads its own)
        sch.parallel(row_block)
    elif parallel:   # before the reduction is split (TIR requires it)
        sch.parallel(sch.fuse(*outer[:-1]) if len(outer) > 2 else outer[0])
    out_block = epilogue_per_tile(sch, block, consumers, outer[-1], target, may_parallel)
    accumulator = sch.get(block).writes[0].source
    init = sch.decompose_reduction(block, window[0])
    sch.vectorize(sch.get_loops(init)[-1])
    # the update's lane loop is left to LLVM (constant iterations over contiguous vectors);
    # TIR's vectorize refuses a loop under a reduction block
    out_loops = sch.get_loops(out_block)
    last = out_loops[-1]
    if _static(sch.get(last).extent) % lanes == 0:
        sch.vectorize(sch.split(last, factors=[None, lanes])[1])
    if row_block is not None:
        pad_per_block(sch, pad, row_block, target)
    elif pad is not None:
        vectorized_pass(sch, pad, target, parallel)
    if consumers:   # a residual read by the epilogue: its lines fetched while the tile runs
        try:
            prefetch_epilogue_inputs(sch, outer[-1], out_block, accumulator)
        except Exception:  # noqa: BLE001 - a nest prefetch.py does not rebuild: none
            pass
    return sch


def _uneven(sch, outer, workers: int) -> bool:
    """Whether parallelizing the outer loops but the last (the usual choice: the tile loop
    stays whole per thread) leaves the threads unevenly loaded while every tile as its own
    iteration would not: a weight-first convolution of a 7x7 map by 7 column panels ran 4
    panels on one of 2 threads and 3 on the other (87% of the work's even share).
    Balanced in whole tiles, a panel's weight is read by at most two threads."""
    if workers < 2 or len(outer) < 2:
        return False
    extents = [_static(sch.get(loop).extent) for loop in outer]
    if any(e is None for e in extents):
        return False
    coarse = 1
    for e in extents[:-1]:
        coarse *= e
    fine = coarse * extents[-1]
    return balance(coarse, workers) < EVEN and balance(fine, workers) > balance(coarse, workers)


def _pads(stmt) -> bool:
    """Whether a pad block really pads (its body selects), not a copy TOPI emits for an
    unpadded convolution."""
    return type(stmt.body).__name__ != "BufferStore" or \
        type(stmt.body.value).__name__ in ("Call", "Select")
