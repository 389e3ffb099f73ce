"""backends/host/gemm.py: the register-tiled schedule of GEMM-shaped kernels. Scheduled
kernels compute what TVM's unscheduled loop nest computes (matmuls with batches, GEMVs,
widths no vector divides, 1x1 and padded 3x3 NHWC convolutions with HWIO weights, strided,
grouped, on maps whose width has no small divisor, products per attention head), serial and
parallel; reductions that are not products (column sums, a loss) are left to the other
rules."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from anychip.backends.host import gemm, reduction_kernel  # noqa: E402

from .kernels import fused_kernel as _fused  # noqa: E402

TARGET = None


def _target():
    global TARGET
    if TARGET is None:
        from anychip.backends.cpu.backend import host_cpu_name

        TARGET = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name(), "num-cores": 2})
    return TARGET


def _const(rng, *shape):
    return relax.const((rng.standard_normal(shape) / 4).astype(np.float32))


def _matmul(m, k, n, batch=None, relu=True):
    rng = np.random.default_rng(m * 7 + n)

    def build(bb, x):
        y = bb.emit(relax.op.add(relax.op.matmul(x, _const(rng, k, n)), _const(rng, n)))
        return bb.emit(relax.op.nn.relu(y)) if relu else y

    return _fused(build, (m, k) if batch is None else (batch, m, k))


def _product(a, b):
    """A matmul of two activations (attention's), scaled as BERT's scores are."""
    return _fused(lambda bb, x, y: bb.emit(relax.op.multiply(relax.op.matmul(x, y),
                                                             relax.const(0.125))), a, b)


def _conv(hw, cin, cout, k=1, stride=1, groups=1, residual=False):
    rng = np.random.default_rng(hw * 13 + cout)
    out = (hw + 2 * (k // 2) - k) // stride + 1
    weight = _const(rng, k, k, cin // groups, cout)   # HWIO, as backends/host/hwio.py makes it

    def build(bb, x, *rest):
        y = bb.emit(relax.op.nn.conv2d(x, weight, strides=stride, padding=k // 2,
                                       groups=groups, data_layout="NHWC",
                                       kernel_layout="HWIO"))
        y = bb.emit(relax.op.add(y, _const(rng, 1, 1, 1, cout)))
        if rest:
            y = bb.emit(relax.op.add(y, rest[0]))
        return bb.emit(relax.op.nn.relu(y))

    shapes = [(1, hw, hw, cin)] + ([(1, out, out, cout)] if residual else [])
    return _fused(build, *shapes)


def _squeeze_excite(images, hw, squeezed, channels):
    """A squeeze-excite gate: the pooled [N, 1, 1, C'] through a 1x1 convolution, bias and
    sigmoid, broadcast over the [N, H, W, C] feature map it scales."""
    rng = np.random.default_rng(hw + channels)
    weight = _const(rng, 1, 1, squeezed, channels)

    def build(bb, pooled, x):
        y = bb.emit(relax.op.nn.conv2d(pooled, weight, data_layout="NHWC",
                                       kernel_layout="HWIO"))
        y = bb.emit(relax.op.sigmoid(relax.op.add(y, _const(rng, 1, 1, 1, channels))))
        return bb.emit(relax.op.multiply(x, y))

    return _fused(build, (images, 1, 1, squeezed), (images, hw, hw, channels))


CASES = {
    "squeeze_excite": lambda: _squeeze_excite(2, 5, 8, 32),
    "mlp_layer": lambda: _matmul(4, 64, 128),
    "batched_rows": lambda: _matmul(6, 32, 48, batch=3),
    "gemv": lambda: _matmul(1, 96, 40, relu=False),
    "streamed_gemv": lambda: _matmul(1, 512, 240),   # 480 KB: one row of 15 vectors
    "odd_width": lambda: _matmul(5, 24, 10),
    "pointwise": lambda: _conv(14, 40, 96),
    "pointwise_residual": lambda: _conv(7, 64, 64, residual=True),
    "prime_map": lambda: _conv(13, 32, 48),
    "strided": lambda: _conv(10, 16, 32, stride=2),
    "grouped": lambda: _conv(7, 96, 96, groups=3),
    "grouped_narrow": lambda: _conv(6, 24, 24, groups=6),   # 4 channels a group
    "grouped_ragged": lambda: _conv(7, 136, 136, groups=4),   # 34 a group: 16 + 16 + 2
    "grouped_ragged_wide": lambda: _conv(4, 136, 136, groups=2),   # 68: a 5-register row
    "ragged_matmul": lambda: _matmul(14, 32, 100),   # rows of 20 (16 + 4)
    "attention_scores": lambda: _product((1, 4, 12, 16), (1, 4, 16, 12)),   # Q K^T per head
    "attention_values": lambda: _product((2, 3, 10, 12), (2, 3, 12, 16)),   # P V per head
    "prime_tokens": lambda: _matmul(37, 16, 32, batch=2),   # 37 rows: 8 a tile, predicated
    "prime_tokens_ragged": lambda: _matmul(29, 16, 34),
    "broadcast_heads": lambda: _product((2, 4, 10, 8), (1, 4, 8, 12)),   # K shared by images
    "grouped_query": lambda: _product((3, 4, 6, 8), (3, 1, 8, 16)),   # one K per image
    "decode_step": lambda: _product((4, 1, 16), (4, 16, 24)),   # one query row per head
    "3x3_padded": lambda: _conv(9, 16, 32, k=3),
    "3x3_strided": lambda: _conv(11, 8, 16, k=3, stride=2),
    "3x3_row_blocks": lambda: _conv(32, 8, 16, k=3),   # padded per block of 4 output rows
    "narrow_projection": lambda: _conv(14, 32, 24),   # a whole row of 3 8-lane vectors
    "narrow_40": lambda: _conv(8, 16, 40),   # 5 vectors a row, 4 rows
    # weight-first on 7x7 maps by 7 column panels: every tile its own parallel iteration
    "uneven_panels": lambda: _conv(7, 64, 224, residual=True),
    "uneven_panels_3x3": lambda: _conv(7, 48, 112, k=3),
}


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_scheduled_kernel_matches_the_loop_nest(case, parallel, monkeypatch):
    # these kernels are below the pool's threshold: parallel ones are made parallel anyway
    monkeypatch.setattr(reduction_kernel, "MIN_PARALLEL_ITERATIONS", 0)
    func = CASES[case]()
    target = _target()
    with target:
        sch = gemm.schedule_gemm(func, target, parallel)
    assert sch is not None, f"{case}: the rule did not take it"
    fast = tvm.compile(sch.mod, target=target)
    plain = tvm.compile(tvm.IRModule({"main": func}), target=target)
    rng = np.random.default_rng(1)
    args = [rng.standard_normal([int(d) for d in p.shape]).astype(np.float32)
            for p in func.params[:-1]]
    outs = [tvm.runtime.tensor(np.full([int(d) for d in func.params[-1].shape], np.nan,
                                       np.float32)) for _ in range(2)]
    fast["main"](*[tvm.runtime.tensor(a) for a in args], outs[0])
    plain["main"](*[tvm.runtime.tensor(a) for a in args], outs[1])
    np.testing.assert_allclose(outs[0].numpy(), outs[1].numpy(), rtol=1e-5, atol=1e-5)


def test_a_padded_convolution_pads_per_block_of_rows_in_the_parallel_loop():
    """Tiles streaming the weight past pixels: the padded input of each block of output rows
    is made inside the parallel loop (reduction_kernel.PAD_ROWS), no padded copy of the whole
    input; VGG-19's 224x224x64 convolution 17.6 -> 17.0 ms alone."""
    target = _target()
    with target:
        text = gemm.schedule_gemm(_conv(32, 8, 16, k=3), target, True).mod.script()
    parallel, pad = text.index("T.parallel("), text.index('T.sblock("pad_temp")')
    assert parallel < pad < text.index('T.sblock("conv2d_nhwc', pad), text
    assert "T.parallel(T.int64(8))" in text   # 32 rows in blocks of 4: 8 blocks


@pytest.mark.parametrize("cout, loop", [(224, 49), (256, 8)])
def test_uneven_column_panels_are_balanced_tile_by_tile(cout, loop, monkeypatch):
    """A deep layer on a 7x7 map takes its weight first, column panel by panel: 7 panels on
    2 threads ran 4 on one thread and 3 on the other (Inception-v2's 7x7 convolutions at
    150-180 GFLOP/s where its 14x14 ones ran 210). Such kernels make every tile (7 panels x 7
    rows of pixels = 49) a parallel iteration; 8 panels split evenly and stay whole."""
    monkeypatch.setattr(reduction_kernel, "MIN_PARALLEL_ITERATIONS", 0)
    target = _target()
    with target:
        text = gemm.schedule_gemm(_conv(7, 512, cout), target, True).mod.script()
    assert text.count("T.parallel(") == 1, text
    assert f"T.parallel(T.int64({loop}))" in text, text


@pytest.mark.parametrize("shape, parallel", [((4, 64, 128), False), ((64, 256, 256), True)])
def test_only_kernels_worth_the_thread_pool_are_parallel(shape, parallel):
    """An MLP layer's 32k multiply-adds stay on one thread (a pool launch costs more than
    they take); 4M go parallel."""
    target = _target()
    with target:
        sch = gemm.schedule_gemm(_matmul(*shape), target, True)
    assert ("T.parallel" in sch.mod.script()) == parallel
    m, k, n = shape
    assert (m * k * n >= reduction_kernel.MIN_PARALLEL_ITERATIONS) == parallel


def test_a_broadcast_epilogue_computes_the_gate_once_and_scales_in_its_own_pass():
    """A squeeze-excite kernel: the sigmoid is computed at the gate's [N, 1, 1, C], once per
    gate value (inlined into the broadcast it was computed once per pixel: 3.2 million
    sigmoids for 256 gate values in EfficientNet at batch 8, on one thread); the multiply
    over the feature map is a pass of its own, parallel although the 1x1 convolution is too
    small for the thread pool."""
    target = _target()
    func = _squeeze_excite(8, 56, 8, 32)
    with target:
        sch = gemm.schedule_gemm(func, target, True)
    gate = sch.get(sch.get_sblock("compute"))   # TOPI's sigmoid
    assert [int(d) for d in gate.writes[0].source.shape] == [8, 1, 1, 32], sch.mod.script()
    text = sch.mod.script()
    assert text.count("T.parallel(") == 1, text
    assert text.index("T.parallel(") < text.index('T.sblock("T_multiply"'), text


@pytest.mark.parametrize("residual", [True, False])
def test_a_residual_read_by_the_epilogue_is_prefetched_at_the_tiles_start(residual):
    """The shortcut added in the epilogue is prefetched (one line per vector of the tile)
    before the tile's reduction, so its misses overlap the multiply-adds (ResNet-50's 56x56
    64->256 with its shortcut at batch 8: 6.5 -> 4.8 ms alone); no residual, no prefetch.
    The values are test_scheduled_kernel_matches_the_loop_nest's pointwise_residual case."""
    target = _target()
    with target:
        text = gemm.schedule_gemm(_conv(14, 32, 64, residual=residual), target, True).mod.script()
    assert ("T.prefetch(" in text) == residual, text
    if residual:
        start = text.index("T.prefetch(")
        assert start < text.index("T.axis.reduce("), text
        # one per vector: a tile of 7 rows x 2 vectors of 16 lanes (14 with 8 lanes x 4)
        assert "_pf in T.unroll(" in text and "T.vectorized" not in text[:start], text


def _column_sum():
    return _fused(lambda bb, x: bb.emit(relax.op.sum(x, axis=[0])), (64, 32))


def _loss():
    return _fused(lambda bb, x: bb.emit(relax.op.sum(relax.op.multiply(x, x))), (8, 16))


@pytest.mark.parametrize("build", [_column_sum, _loss], ids=["column_sum", "loss"])
def test_other_reductions_are_left_to_the_other_rules(build):
    target = _target()
    with target:
        assert gemm.schedule_gemm(build(), target, False) is None


def test_tile_fits_the_registers_and_divides_the_map():
    for pixels, width, lanes, registers in [(13, 1000, 8, 32), (56, 64, 16, 32),
                                            (7, 512, 16, 32), (111, 64, 16, 32),
                                            (28, 128, 8, 16), (1, 1000, 8, 32)]:
        rows, vectors = gemm.tile(pixels, width, lanes, registers)
        assert pixels % rows == 0 and width % (vectors * lanes) == 0
        assert rows * vectors + vectors + 1 <= registers
    assert gemm.tile(13, 1000, 8, 32) == (13, 1)   # a prime map: 13 rows, not 1
    # ViT's tokens (prime): the last tile's rows predicated off, at most 12 accumulators
    assert gemm.tile(197, 768, 16, 32) == (6, 2)
    assert gemm.tile(197, 16, 16, 32) == (8, 1)
    # streaming the weight past a tile of pixels: at most ACCUMULATORS (16 and SqueezeNet's
    # 26 measured slower); weight-first tiles (None) keep 8 x 2
    assert gemm.tile(56, 64, 16, 32, gemm.ACCUMULATORS) == (7, 2)
    assert gemm.tile(13, 256, 16, 32, gemm.ACCUMULATORS) == (13, 1)
    assert gemm.tile(128, 1024, 16, 32) == (8, 2)


def test_narrow_projections_tile_whole_rows():
    """24 or 40 channels on AVX-512 (8-lane vectors, 3 or 5 a row): tiles of the whole row,
    at most NARROW_ACCUMULATORS, rows dividing the pixels; not for full-width vectors, other
    counts, or rows too few to pay."""
    assert gemm.narrow_row(56, 24, 8, 16) == (7, 3)
    assert gemm.narrow_row(28, 40, 8, 16) == (4, 5)
    assert gemm.narrow_row(14, 40, 8, 16) is None     # 2 rows at most
    assert gemm.narrow_row(56, 48, 16, 16) is None    # full vectors: the usual tile
    assert gemm.narrow_row(56, 72, 8, 16) is None     # 9 vectors
    assert gemm.narrow_row(56, 24, 8, 8) is None      # AVX2: 8 lanes are the full width
    for pixels, width in [(56, 24), (28, 40), (112, 24), (7, 24)]:
        rows, vectors = gemm.narrow_row(pixels, width, 8, 16)
        assert pixels % rows == 0 and rows * vectors <= gemm.NARROW_ACCUMULATORS


def test_ragged_rows_are_two_power_of_two_pieces_within_the_registers():
    """Widths no 8-lane vector divides get rows of one ragged vector that LLVM splits into
    whole registers and a tail; rows LLVM splits badly (17, 50, 52 lanes measured 7-8x
    slower) are never chosen."""
    assert gemm.ragged_rows(34, 16) and gemm.ragged_rows(100, 16)
    assert not gemm.ragged_rows(136, 16) and not gemm.ragged_rows(51, 16)   # 8 lanes; odd
    for pixels, width in [(28, 34), (14, 68), (14, 100), (7, 102), (13, 50), (1, 2), (197, 34),
                          (13, 34)]:
        rows, cols = gemm._ragged_tile(pixels, width, 16, 32)
        regs = -(-cols // 16)
        assert width % cols == 0 and cols % 2 == 0
        # rows divide the map, or (no divisor fits) the last tile's are predicated off
        assert pixels % rows == 0 or all(pixels % d for d in range(2, rows + 1))
        assert bin(cols).count("1") <= 2 and rows * regs + regs + 1 <= 32
    assert gemm._ragged_tile(28, 34, 16, 32) == (7, 34)
    assert gemm._ragged_tile(13, 10, 16, 32) == (13, 10)   # a prime map: all its rows
    assert gemm._ragged_tile(14, 100, 16, 32)[1] == 20   # not 50 = 32 + 16 + 2


def test_gemv_tiles_stream_large_weights_in_wide_rows():
    """A GEMV's tile: the most vectors dividing the width for a streamed weight (within the
    registers, leaving panels to the threads in parallel), up to 4 for a small one."""
    assert gemm._gemv_vectors(240, 16, 32, False, True) == 15      # one panel of 15 vectors
    assert gemm._gemv_vectors(960, 16, 32, False, True) == 20      # 60 = 3 x 20
    assert gemm._gemv_vectors(1280, 16, 32, True, True) == 20      # 4 panels for 2 threads
    assert gemm._gemv_vectors(1008, 16, 32, True, True) == 9       # 63 = 7 x 9
    assert gemm._gemv_vectors(240, 16, 32, False, False) == 1      # small: 15 has no 2 or 4
    assert gemm._gemv_vectors(1152, 16, 32, False, False) == 4
    assert gemm._gemv_vectors(96, 8, 16, False, True) == 6         # AVX2: 8 accumulators
