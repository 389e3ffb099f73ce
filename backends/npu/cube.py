"""The cube: its tensor intrinsic, the tiling planner, and the tiled TIR kernel.

A cube instruction multiplies one fractal of L0A (m x k) by one of L0B (k x n) into L0C, with
float16/bfloat16 (or int8) inputs and a float32 (int32) accumulator (docs/hardware.md §1.1). Here
that step is a TVM tensor intrinsic (`register_intrinsic`), and every MatMul, batched MatMul,
Gemm and convolution (im2col, as the chip's load3d does on its way into L0A) becomes one
kernel (`cube_kernel`) whose loops follow the chip's data path:

    GM --(A, B tiles: m1 x k1, k1 x n1)--> L1 --(m1 x k0, k0 x n1)--> L0A / L0B
       --cube fractals--> L0C (m1 x n1 accumulators) --(cast)--> UB --> GM

The tile sizes come from `plan_tiles`, which checks every buffer against the profile's
capacities (a requested tile that does not fit is re-tiled, and a chip on which not even one
fractal fits is refused); `check_capacity` then reads the scheduled TIR's buffer allocations
per scope and refuses anything over capacity, so the check is on the program that runs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

from anychip.compiler.errors import AnychipError

from .chip import Chip, dtype_bytes

SCOPES = {"L1": "global.L1", "L0A": "local.L0A", "L0B": "local.L0B", "L0C": "local.L0C",
          "UB": "local.UB"}


# ---------------------------------------------------------------------------------------------
# the tensor intrinsic

def intrinsic_name(in_dtype: str, acc_dtype: str, m: int, n: int, k: int) -> str:
    return f"anychip_npu_cube_{m}x{n}x{k}_{in_dtype}_{acc_dtype}"


@functools.lru_cache(maxsize=None)
def register_intrinsic(in_dtype: str, acc_dtype: str, m: int, n: int, k: int) -> str:
    """Register (once per process) the cube step m x n x k: C[m, n] += A[m, k] * B[k, n] with
    the products and the sum in `acc_dtype`. Returns its name for Schedule.tensorize."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    a_scope, b_scope, c_scope = SCOPES["L0A"], SCOPES["L0B"], SCOPES["L0C"]

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (m, k), in_dtype, offset_factor=1, scope=a_scope)
        B = T.match_buffer(b, (k, n), in_dtype, offset_factor=1, scope=b_scope)
        C = T.match_buffer(c, (m, n), acc_dtype, offset_factor=1, scope=c_scope)
        with T.sblock("root"):
            T.reads(C[0:m, 0:n], A[0:m, 0:k], B[0:k, 0:n])
            T.writes(C[0:m, 0:n])
            for i, j, kk in T.grid(m, n, k):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, kk])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], acc_dtype) * T.cast(B[vk, vj],
                                                                                 acc_dtype)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int32()
        sb = T.int32()
        sc = T.int32()
        A = T.match_buffer(a, (m, k), in_dtype, offset_factor=1, strides=[sa, 1], scope=a_scope)
        B = T.match_buffer(b, (k, n), in_dtype, offset_factor=1, strides=[sb, 1], scope=b_scope)
        C = T.match_buffer(c, (m, n), acc_dtype, offset_factor=1, strides=[sc, 1],
                           scope=c_scope)
        with T.sblock("root"):
            T.reads(C[0:m, 0:n], A[0:m, 0:k], B[0:k, 0:n])
            T.writes(C[0:m, 0:n])
            # one fractal: an outer product per k, the n lanes of a row at once
            for i in T.serial(m):
                for kk in T.unroll(k):
                    for j in T.vectorized(n):
                        C[i, j] = C[i, j] + T.cast(A[i, kk], acc_dtype) * T.cast(B[kk, j],
                                                                                 acc_dtype)

    name = intrinsic_name(in_dtype, acc_dtype, m, n, k)
    TensorIntrin.register(name, desc, impl, override=True)
    return name


# ---------------------------------------------------------------------------------------------
# tiling

@dataclass(frozen=True)
class Tile:
    """L1 holds an m1 x k1 slab of A and a k1 x n1 slab of B; L0A/L0B hold m1 x k0 / k0 x n1;
    L0C holds the m1 x n1 accumulators; UB stages the m1 x n1 output."""

    m1: int
    n1: int
    k1: int
    k0: int


@dataclass
class CubePlan:
    """One cube kernel: problem size, dtypes, tile, buffer use and the work it does."""

    G: int
    M: int
    N: int
    K: int
    in_dtype: str
    acc_dtype: str
    out_dtype: str
    fractal: tuple[int, int, int]
    tile: Tile
    buffer_bytes: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def padded(self) -> tuple[int, int, int]:
        t = self.tile
        return _ceil_to(self.M, t.m1), _ceil_to(self.N, t.n1), _ceil_to(self.K, t.k1)

    @property
    def fractals(self) -> int:
        """Cube instructions on the chip (edges padded to one fractal, not to a tile)."""
        fm, fn, fk = self.fractal
        return self.G * math.ceil(self.M / fm) * math.ceil(self.N / fn) * math.ceil(self.K / fk)

    @property
    def blocks(self) -> int:
        """Independent output tiles, spread over the AI cores."""
        t = self.tile
        return self.G * math.ceil(self.M / t.m1) * math.ceil(self.N / t.n1)

    def moved_bytes(self) -> dict[str, int]:
        """Bytes into each level over the whole kernel (GM counts reads and the write)."""
        t = self.tile
        ib, ob = dtype_bytes(self.in_dtype), dtype_bytes(self.out_dtype)
        fm, fn, fk = self.fractal
        m, n, k = (_ceil_to(self.M, fm), _ceil_to(self.N, fn), _ceil_to(self.K, fk))
        a = self.G * m * k * ib * math.ceil(self.N / t.n1)    # A re-read once per column tile
        b = self.G * k * n * ib * math.ceil(self.M / t.m1)    # B re-read once per row tile
        c = self.G * self.M * self.N * ob
        return {"GM": a + b + c, "L1": a + b, "L0A": a, "L0B": b,
                "L0C": self.G * m * n * dtype_bytes(self.acc_dtype), "UB": c}

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(fractals=self.fractals, blocks=self.blocks, moved_bytes=self.moved_bytes())
        return d


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def buffer_use(tile: Tile, in_dtype: str, acc_dtype: str, out_dtype: str) -> dict[str, int]:
    ib = dtype_bytes(in_dtype)
    return {"L1": (tile.m1 * tile.k1 + tile.k1 * tile.n1) * ib,
            "L0A": tile.m1 * tile.k0 * ib,
            "L0B": tile.k0 * tile.n1 * ib,
            "L0C": tile.m1 * tile.n1 * dtype_bytes(acc_dtype),
            "UB": tile.m1 * tile.n1 * dtype_bytes(out_dtype)}


def overflow(use: dict[str, int], capacity: dict[str, int]) -> str | None:
    for level, used in use.items():
        if used > capacity[level]:
            return f"{level} {used} B > {capacity[level]} B"
    return None


def _score(chip: Chip, G, M, N, K, tile: Tile, in_dtype: str) -> tuple:
    """Estimated cycles of a tiling (cube work over the cores it keeps busy, or the GM traffic
    its re-reads cost, whichever is longer); ties go to the least padding (work the simulator
    would do for nothing), then to the larger tile."""
    blocks = G * math.ceil(M / tile.m1) * math.ceil(N / tile.n1)
    waves = math.ceil(blocks / chip.ai_cores)
    fm, fn, fk = chip.fractal(in_dtype)
    per_block = (tile.m1 // fm) * (tile.n1 // fn) * math.ceil(_ceil_to(K, tile.k1) / fk)
    ib = dtype_bytes(in_dtype)
    traffic = G * ib * (M * K * math.ceil(N / tile.n1) + K * N * math.ceil(M / tile.m1))
    bytes_per_cycle = chip.bandwidth_gbs / chip.clock_ghz
    cycles = max(waves * per_block / chip.fractals_per_cycle(in_dtype), traffic / bytes_per_cycle)
    padded = G * _ceil_to(M, tile.m1) * _ceil_to(N, tile.n1) * _ceil_to(K, tile.k1)
    return (cycles, padded, -(tile.m1 * tile.n1 * tile.k1))


def plan_tiles(chip: Chip, G: int, M: int, N: int, K: int, in_dtype: str, out_dtype: str,
               requested: Tile | None = None, where: str = "") -> CubePlan:
    """Pick the tile for a G x (M x K) . (K x N) product that fits every buffer.

    A `requested` tile that overflows a buffer is replaced by the best one that fits (noted in
    the plan); when not even one fractal fits, AnychipError names the buffer and the sizes.
    """
    acc = chip.accumulator(in_dtype)
    fm, fn, fk = chip.fractal(in_dtype)
    capacity = chip.buffers
    smallest = Tile(fm, fn, fk, fk)
    bad = overflow(buffer_use(smallest, in_dtype, acc, out_dtype), capacity)
    if bad:
        raise AnychipError(f"target '{chip.name}'{where}: one {fm}x{fn}x{fk} {in_dtype} cube "
                           f"fractal does not fit the buffers ({bad}); check the profile's "
                           f"chip.buffers.")
    notes = []
    if requested is not None:
        if requested.m1 % fm or requested.n1 % fn or requested.k0 % fk or \
                requested.k1 % requested.k0:
            raise AnychipError(f"target '{chip.name}': cube_tile {_tile_text(requested)} must be "
                               f"multiples of the {fm}x{fn}x{fk} fractal with k1 a multiple of "
                               f"k0.")
        bad = overflow(buffer_use(requested, in_dtype, acc, out_dtype), capacity)
        if not bad:
            return CubePlan(G, M, N, K, in_dtype, acc, out_dtype, (fm, fn, fk), requested,
                            buffer_use(requested, in_dtype, acc, out_dtype), notes)
        notes.append(f"requested tile {_tile_text(requested)} overflows {bad}: re-tiled")
    best = None
    mcap, ncap, kcap = _ceil_to(M, fm), _ceil_to(N, fn), _ceil_to(K, fk)
    for m1 in _sizes(fm, mcap, 16):
        for n1 in _sizes(fn, ncap, 16):
            for k0 in _sizes(fk, kcap, 8):
                for k1 in _sizes(k0, _ceil_to(kcap, k0), 8):
                    tile = Tile(m1, n1, k1, k0)
                    if overflow(buffer_use(tile, in_dtype, acc, out_dtype), capacity):
                        continue
                    score = _score(chip, G, M, N, K, tile, in_dtype)
                    if best is None or score < best[0]:
                        best = (score, tile)
    tile = best[1]
    if notes:
        notes[-1] += f" to {_tile_text(tile)}"
    return CubePlan(G, M, N, K, in_dtype, acc, out_dtype, (fm, fn, fk), tile,
                    buffer_use(tile, in_dtype, acc, out_dtype), notes)


def _sizes(base: int, cap: int, most: int) -> list[int]:
    """base, 2*base, 4*base ... up to `most` fractals and not beyond the (padded) extent."""
    out, size = [], base
    while size <= max(cap, base) and size <= base * most:
        out.append(size)
        size *= 2
    return out


def _tile_text(t: Tile) -> str:
    return f"m1={t.m1} n1={t.n1} k1={t.k1} k0={t.k0}"


# ---------------------------------------------------------------------------------------------
# the kernel

@dataclass(frozen=True)
class Conv2dGeometry:
    """im2col of an NCHW convolution: GEMM rows are (n, oh, ow), columns are (c, kh, kw)."""

    batch: int
    channels: int
    height: int
    width: int
    groups: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]     # top, left, bottom, right
    dilation: tuple[int, int]

    @property
    def out_hw(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilation
        pt, pl, pb, pr = self.padding
        oh = (self.height + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (self.width + pl + pr - dw * (kw - 1) - 1) // sw + 1
        return oh, ow


def cube_kernel(plan: CubePlan, a_shape: tuple[int, ...], b_groups: int,
                conv: Conv2dGeometry | None = None):
    """A scheduled, tensorized PrimFunc: (A, B[Gb, K, N]) -> C[G, M, N] in plan.out_dtype.

    A is [Ga, M, K] (Ga = 1 broadcasts over G) or, for `conv`, the NCHW input whose im2col
    rows are gathered on the way into L1.
    """
    import tvm
    from tvm import s_tir, te

    G, M, N, K = plan.G, plan.M, plan.N, plan.K
    t = plan.tile
    fm, fn, fk = plan.fractal
    Mp, Np, Kp = plan.padded
    ind, acc, outd = plan.in_dtype, plan.acc_dtype, plan.out_dtype
    zero = tvm.tirx.const(0, ind)
    A = te.placeholder(a_shape, ind, name="A")
    B = te.placeholder((b_groups, K, N), ind, name="B")

    if conv is None:
        a_groups = a_shape[0]

        def a_value(g, i, k):
            return A[g if a_groups > 1 else 0, i, k]

        a_valid = None
    else:
        oh_, ow_ = conv.out_hw
        kh_, kw_ = conv.kernel
        cg = conv.channels // conv.groups

        def coords(g, i, k):
            n, oh, ow = i // (oh_ * ow_), (i // ow_) % oh_, i % ow_
            c, r, s = k // (kh_ * kw_), (k // kw_) % kh_, k % kw_
            h = oh * conv.strides[0] + r * conv.dilation[0] - conv.padding[0]
            w = ow * conv.strides[1] + s * conv.dilation[1] - conv.padding[1]
            return n, g * cg + c, h, w

        def a_value(g, i, k):
            n, c, h, w = coords(g, i, k)
            return A[n, c, h, w]

        def a_valid(g, i, k):
            _, _, h, w = coords(g, i, k)
            return te.all(h >= 0, h < conv.height, w >= 0, w < conv.width)

    def a_pad(g, i, k):
        inside = te.all(i < M, k < K)
        if a_valid is not None:
            inside = te.all(inside, a_valid(g, i, k))
        return te.if_then_else(inside, a_value(g, i, k), zero)

    a_p = te.compute((G, Mp, Kp), a_pad, name="A_frac")
    b_p = te.compute((G, Kp, Np), lambda g, k, j: te.if_then_else(
        te.all(k < K, j < N), B[g if b_groups > 1 else 0, k, j], zero), name="B_frac")
    r = te.reduce_axis((0, Kp), name="k")
    c_acc = te.compute((G, Mp, Np), lambda g, i, j: te.sum(
        a_p[g, i, r].astype(acc) * b_p[g, r, j].astype(acc), axis=r), name="C_acc")
    c_out = te.compute((G, M, N), lambda g, i, j: c_acc[g, i, j].astype(outd), name="C")
    func = te.create_prim_func([A, B, c_out])

    sch = s_tir.Schedule(func)
    cb, ob = sch.get_sblock("C_acc"), sch.get_sblock("C")
    sch.set_scope(cb, 0, SCOPES["L0C"])
    g, i, j, k = sch.get_loops(cb)
    io, ii = sch.split(i, [Mp // t.m1, t.m1])
    jo, ji = sch.split(j, [Np // t.n1, t.n1])
    sch.reorder(g, io, jo, ii, ji, k)
    block_loop = sch.fuse(g, io, jo)
    i_f, i16 = _split(sch, ii, [t.m1 // fm, fm])
    j_f, j16 = _split(sch, ji, [t.n1 // fn, fn])
    k1, k0, k_f, k16 = _split(sch, k, [Kp // t.k1, t.k1 // t.k0, t.k0 // fk, fk])
    sch.reorder(*[loop for loop in (k1, k0, i_f, j_f, k_f, i16, j16, k16) if loop is not None])
    copy = sch.cache_write(ob, 0, SCOPES["UB"])
    sch.reverse_compute_at(ob, block_loop)
    sch.reverse_compute_at(copy, block_loop)
    a_l1 = sch.cache_read(cb, 0, SCOPES["L1"])
    b_l1 = sch.cache_read(cb, 1, SCOPES["L1"])
    _place(sch, a_l1, k1 or block_loop)
    _place(sch, b_l1, k1 or block_loop)
    sch.compute_inline(sch.get_sblock("A_frac"))
    sch.compute_inline(sch.get_sblock("B_frac"))
    a_l0 = sch.cache_read(cb, 0, SCOPES["L0A"])
    b_l0 = sch.cache_read(cb, 1, SCOPES["L0B"])
    _place(sch, a_l0, k0 or k1 or block_loop)
    _place(sch, b_l0, k0 or k1 or block_loop)
    if plan.blocks > 1:
        sch.parallel(block_loop)              # output tiles over the AI cores
    sch.decompose_reduction(cb, k1 or k0 or i_f or j_f or k_f or i16)
    sch.tensorize(i16, register_intrinsic(ind, acc, fm, fn, fk))
    return sch.mod["main"].with_attr("tir.is_scheduled", True)


def _place(sch, block, loop) -> None:
    """compute_at, unless the block already sits under `loop`."""
    target = sch.get(loop)
    if not any(sch.get(other).same_as(target) for other in sch.get_loops(block)):
        sch.compute_at(block, loop)


def _split(sch, loop, factors: list[int]) -> list:
    """Split `loop` by exact `factors`, with None for each factor of 1 except the innermost
    (extent-1 loops get simplified away and then block bindings no longer match tensorize)."""
    kept = [f for f in factors[:-1] if f > 1] + [factors[-1]]
    parts = list(sch.split(loop, kept)) if len(kept) > 1 else [loop]
    out, it = [], iter(parts)
    for f in factors[:-1]:
        out.append(next(it) if f > 1 else None)
    out.append(next(it))
    return out


def check_capacity(func, chip: Chip, where: str = "") -> dict[str, int]:
    """Bytes each buffer level holds at once in the scheduled kernel; AnychipError if any
    exceeds the chip's capacity. Read from the TIR's allocations after compaction."""
    import tvm
    from tvm import s_tir

    mod = tvm.IRModule({"main": func})
    mod = s_tir.transform.LowerInitBlock()(mod)
    mod = s_tir.transform.PlanAndUpdateBufferAllocationLocation()(mod)
    mod = s_tir.transform.ConvertBlocksToOpaque()(mod)
    mod = s_tir.transform.CompactBufferAllocation()(mod)
    mod = s_tir.transform.LowerOpaqueBlock()(mod)
    per_scope = {str(k): int(v) for k, v in
                 s_tir.analysis.calculate_allocated_bytes(mod)["main"].items()}
    used = {level: per_scope.get(scope, 0) for level, scope in SCOPES.items()}
    bad = overflow(used, chip.buffers)
    if bad:
        raise AnychipError(f"target '{chip.name}'{where}: the cube kernel needs {bad}; re-tile "
                           f"with a smaller cube_tile or check the profile's chip.buffers.")
    return used
