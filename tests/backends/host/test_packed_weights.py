"""backends/host/packed_weights.py: constant GEMM and convolution weights packed in column
panels. The packed kernels compute what the plain matmul/conv2d compute (predicated rows,
padded and strided windows, serial and parallel), gemm.py tiles them with the panel's
columns, and the pass packs exactly what the GEMM schedule takes (GEMVs included): not grouped
convolutions, activations (attention's products) or widths without whole vectors."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from anychip.backends.host import gemm, packed_weights, reduction_kernel  # noqa: E402

from .kernels import fused_kernel as _fused, relax_module  # noqa: E402
from .test_gemm import _target  # noqa: E402

LANES = 16


def _panels_matmul(w, c):
    k, n = w.shape
    return np.ascontiguousarray(w.reshape(k, n // c, c).transpose(1, 0, 2))


def _panels_conv(w, c):
    kh, kw, i, o = w.shape
    return np.ascontiguousarray(w.reshape(kh, kw, i, o // c, c).transpose(3, 0, 1, 2, 4))


# (x shape, HWIO or [K, N] weight shape, panel columns, strides, padding); two panels at
# least (with one, n // c and n % c simplify away and the plain rule takes the kernel)
CASES = {
    "matmul_prime_rows": ((1, 37, 48), (48, 64), 32, None, None),   # predicated last tile
    "matmul_one_vector": ((50, 24), (24, 48), 16, None, None),
    "gemv": ((1, 64), (64, 96), 32, None, None),   # one row: no row tiling, 3 panels
    "conv_1x1": ((1, 7, 7, 40), (1, 1, 40, 64), 32, (1, 1), (0, 0, 0, 0)),
    "conv_3x3_padded": ((1, 9, 9, 16), (3, 3, 16, 32), 16, (1, 1), (1, 1, 1, 1)),
    "conv_3x3_strided": ((1, 11, 11, 8), (3, 3, 8, 64), 32, (2, 2), (1, 1, 1, 1)),
    "conv_asymmetric_pad": ((1, 8, 8, 8), (3, 3, 8, 32), 16, (2, 2), (0, 0, 1, 1)),
}


def _case(name):
    xshape, wshape, c, strides, padding = CASES[name]
    rng = np.random.default_rng(len(name))
    w = (rng.standard_normal(wshape) / 4).astype(np.float32)
    b = (rng.standard_normal(wshape[-1]) / 4).astype(np.float32)

    def build(bb, x):
        if strides is None:
            y = bb.emit_te(packed_weights.pack_matmul, x,
                           relax.const(_panels_matmul(w, c)))
        else:
            y = bb.emit_te(packed_weights.pack_conv2d, x, relax.const(_panels_conv(w, c)),
                           list(strides), list(padding), [1, 1])
        return bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(b))))

    def reference(x):
        if strides is None:
            return np.maximum(x @ w + b, 0)
        top, left, bottom, right = padding
        xp = np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)])
        kh, kw, _, o = w.shape
        oh = (xp.shape[1] - kh) // strides[0] + 1
        ow = (xp.shape[2] - kw) // strides[1] + 1
        out = np.zeros((x.shape[0], oh, ow, o), np.float64)
        for dy in range(kh):
            for dx in range(kw):
                window = xp[:, dy:dy + strides[0] * oh:strides[0],
                            dx:dx + strides[1] * ow:strides[1], :]
                out += window.astype(np.float64) @ w[dy, dx].astype(np.float64)
        return np.maximum(out + b, 0)

    return _fused(build, xshape), reference, xshape, c


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_packed_kernels_are_tiled_by_panel_and_compute_the_plain_op(name, parallel,
                                                                      monkeypatch):
    monkeypatch.setattr(reduction_kernel, "MIN_PARALLEL_ITERATIONS", 0)
    tiles = []
    real = gemm.tile
    monkeypatch.setattr(gemm, "tile", lambda *a: tiles.append(a) or real(*a))
    func, reference, xshape, c = _case(name)
    target = _target()
    with target:
        sch = gemm.schedule_gemm(func, target, parallel)
    assert sch is not None, f"{name}: the GEMM rule did not take the packed kernel"
    # the tile's columns are the panel's: its vectors fixed at c / lanes (a GEMV's one row
    # needs no row count)
    if xshape[0] * (xshape[1] if len(xshape) > 2 else 1) > 1:
        (pixels, width, lanes, _, _, vectors), = tiles
        assert vectors * lanes == c
    else:
        assert tiles == []
    lib = tvm.compile(sch.mod, target=target)
    x = np.random.default_rng(5).standard_normal(xshape).astype(np.float32)
    # FuseTIR passes the constants (panels, bias) in as parameters
    panels, bias = _constants(name)
    assert [int(d) for d in func.params[1].shape] == list(panels.shape)
    out = tvm.runtime.tensor(np.full([int(d) for d in func.params[-1].shape], np.nan,
                                     np.float32))
    lib["main"](*[tvm.runtime.tensor(a) for a in (x, panels, bias)], out)
    np.testing.assert_allclose(out.numpy(), reference(x), rtol=1e-4, atol=1e-4)


def _constants(name):
    """The case's packed weight and bias, as _case made them (same seed)."""
    xshape, wshape, c, strides, _ = CASES[name]
    rng = np.random.default_rng(len(name))
    w = (rng.standard_normal(wshape) / 4).astype(np.float32)
    b = (rng.standard_normal(wshape[-1]) / 4).astype(np.float32)
    return (_panels_matmul(w, c) if strides is None else _panels_conv(w, c)), b


def test_the_pass_packs_what_the_gemm_rule_takes_and_nothing_else():
    rng = np.random.default_rng(9)

    def w(*shape):
        return relax.const((rng.standard_normal(shape) / 4).astype(np.float32))

    w_mm, w_conv, w_gemv, w_group = w(64, 96), w(3, 3, 16, 32), w(64, 32), w(1, 1, 8, 32)

    def build(bb, x, image, q, k):
        dense = bb.emit(relax.op.nn.relu(relax.op.matmul(x, w_mm)))            # packed
        conv = bb.emit(relax.op.nn.conv2d(image, w_conv, padding=1, data_layout="NHWC",
                                          kernel_layout="HWIO"))               # packed
        head = bb.emit(relax.op.matmul(relax.op.mean(x, axis=[0], keepdims=True),
                                       w_gemv))                                # a GEMV
        grouped = bb.emit(relax.op.nn.conv2d(image, w_group, groups=2, data_layout="NHWC",
                                             kernel_layout="HWIO"))            # grouped: no
        scores = bb.emit(relax.op.matmul(q, k))                                # activations
        odd = bb.emit(relax.op.matmul(x, relax.const(
            np.ones((64, 10), np.float32))))                                   # no vectors
        return relax.Tuple([dense, conv, head, grouped, scores, odd])

    shapes = [(20, 64), (1, 6, 6, 16), (2, 8, 16), (2, 16, 8)]
    mod = relax_module(build, *shapes)
    packed, count = packed_weights.pack_weights(mod, LANES)
    assert count == 3
    text = packed.script()
    assert "matmul_packed" in text and "conv2d_packed" in text
    inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    before = [o.numpy() for o in _run_all(mod, inputs)]
    after = [o.numpy() for o in _run_all(packed, inputs)]
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _run_all(mod, inputs):
    from anychip.backends.host.schedule import pipeline

    target = _target()
    exe = relax.build(mod, target, relax_pipeline=pipeline(target, parallel=True))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return list(vm["main"](*[tvm.runtime.tensor(i) for i in inputs]))


def test_panel_columns_follow_the_tile():
    # two vectors where the tile takes two, one where it takes one, none for ragged widths
    assert packed_weights.panel_columns(49, 512, LANES, weight_first=True) == 32
    assert packed_weights.panel_columns(13, 256, LANES, weight_first=False) == 16
    assert packed_weights.panel_columns(14, 34, LANES, weight_first=False) is None
    assert packed_weights.panel_columns(56, 24, LANES, weight_first=False) == 24   # whole row
    assert packed_weights.panel_columns(14, 10, LANES, weight_first=False) is None
