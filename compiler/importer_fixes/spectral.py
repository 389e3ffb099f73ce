"""ONNX DFT for TVM: a Relax converter computing the transform as matrix products with
constant cosine/sine tables, for static signal lengths (TVM's importer has no DFT)."""

from __future__ import annotations

import numpy as np

from .relax_values import const_int, static_shape


def dft_converter():
    """The converter class (built on first use: it imports TVM)."""
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    class DFT(OnnxOpConverter):
        """ONNX DFT as matrix products with constant cosine and sine tables, for a static
        signal length: forward, inverse (scaled by 1/N), onesided (the first N//2+1 bins),
        inverse onesided (a real signal from a Hermitian half-spectrum), dft_length padding
        or truncating the signal, axis as attribute (opset 17) or constant input (opset 20);
        computed in float64 as ONNX's reference does, then cast back.
        Cases: test_dft*, test_dft_*_opset19."""

        @classmethod
        def _impl_v17(cls, bb, inputs, attr, params):
            return cls._dft(bb, inputs, attr, int(attr.get("axis", 1)))

        @classmethod
        def _impl_v20(cls, bb, inputs, attr, params):
            axis = -2 if len(inputs) < 3 or inputs[2] is None else \
                const_int(inputs[2], "DFT's axis")
            return cls._dft(bb, inputs, attr, axis)

        @classmethod
        def _dft(cls, bb, inputs, attr, axis):
            x = inputs[0]
            dtype = str(x.ty.dtype)
            if dtype != "float64":   # ONNX's reference accumulates in float64; so does this
                x = bb.emit(relax.op.astype(x, "float64"))
            shape = static_shape(x)
            rank = len(shape)
            axis = axis + rank if axis < 0 else axis
            inverse, onesided = int(attr.get("inverse", 0)), int(attr.get("onesided", 0))
            perm = [d for d in range(rank - 1) if d != axis] + [axis, rank - 1]
            moved = bb.emit(relax.op.permute_dims(x, perm))        # [..., N, C]
            n_in = shape[axis]
            length = n_in if len(inputs) < 2 or inputs[1] is None else \
                const_int(inputs[1], "DFT's dft_length")
            real = bb.emit(relax.op.take(moved, relax.const(0, "int64"), axis=-1))
            imag = bb.emit(relax.op.take(moved, relax.const(1, "int64"), axis=-1)) \
                if shape[-1] == 2 else None
            if inverse and onesided:
                out_len = length if len(inputs) > 1 and inputs[1] is not None \
                    else 2 * (n_in - 1)
                cos, sin = _hermitian_tables(n_in, out_len)
                re = relax.op.matmul(real, relax.const(cos, "float64"))
                if imag is not None:
                    re = relax.op.subtract(re, relax.op.matmul(imag, relax.const(sin, "float64")))
                parts = [bb.emit(re)]
            else:
                real, imag = (_fit(bb, t, n_in, length) if t is not None else None
                              for t in (real, imag))
                bins = length // 2 + 1 if onesided else length
                k = np.arange(bins)[None, :]
                n = np.arange(length)[:, None]
                angle = 2 * np.pi * n * k / length
                scale = 1.0 / length if inverse else 1.0
                cos = relax.const(np.cos(angle) * scale, "float64")
                sin = relax.const(np.sin(angle) * scale * (1 if inverse else -1), "float64")
                re = relax.op.matmul(real, cos)
                im = relax.op.matmul(real, sin)
                if imag is not None:
                    re = relax.op.subtract(re, relax.op.matmul(imag, sin))
                    im = relax.op.add(im, relax.op.matmul(imag, cos))
                parts = [bb.emit(re), bb.emit(im)]
            stacked = bb.emit(relax.op.stack(parts, axis=-1))      # [..., K, C']
            back = [0] * rank
            for position, dim in enumerate(perm):
                back[dim] = position
            return relax.op.astype(bb.emit(relax.op.permute_dims(stacked, back)), dtype)

    return DFT


def _fit(bb, signal, n_in: int, length: int):
    """The signal cut or zero-padded to `length` along its last axis."""
    from tvm import relax

    if length == n_in:
        return signal
    if length < n_in:
        return bb.emit(relax.op.strided_slice(signal, axes=[-1], begin=[0], end=[length]))
    pad = [0, 0] * (len(signal.ty.shape) - 1) + [0, length - n_in]
    return bb.emit(relax.op.nn.pad(signal, pad))


def _hermitian_tables(bins: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Tables for a real inverse DFT from the first `bins` bins of a Hermitian spectrum:
    x[n] = 1/N * sum_k w_k (Re X[k] cos(2 pi k n / N) - Im X[k] sin(2 pi k n / N)), with
    w_k = 2 for bins that stand for a conjugate pair and 1 for k = 0 and k = N/2."""
    k = np.arange(bins)[:, None]
    n = np.arange(length)[None, :]
    weight = np.full((bins, 1), 2.0)
    weight[0] = 1.0
    if length % 2 == 0 and bins > length // 2:
        weight[length // 2] = 1.0
    weight[k[:, 0] > length // 2] = 0.0
    angle = 2 * np.pi * k * n / length
    return weight * np.cos(angle) / length, weight * np.sin(angle) / length
