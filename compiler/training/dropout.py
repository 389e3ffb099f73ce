"""Dropout with p > 0 inside the compiled train step: a seeded counter-based RNG.

Each Dropout of the training graph becomes y = x * mask, mask = keep * 1/(1-p) (inverted
dropout, as torch), where keep is drawn from a hash of (seed, draw counter, dropout node,
element index), computed in the step itself (Relax integer ops, lowered like any kernel):

    k1 = fmix32(seed + node * GOLDEN)            node: the Dropout's position in the graph
    k2 = fmix32(counter * MIX + k1)
    h  = fmix32(fmix32(index ^ k2) + k1)          index: the element's flat (row-major) index
    keep = (h & 0xFFFFFF) >= ceil(p * 2**24)      a uniform 24-bit draw against p

fmix32 is MurmurHash3's 32-bit finalizer (a bijection of uint32 with full avalanche), so the
elements of one tensor never share a hash for one key and every (seed, counter, node) gives an
independent-looking mask. The step takes one small input besides the model's: `key`, uint32
[seed, counter, train], which the Trainer fills: counter = the number of forward passes done
in training (each micro-batch of an accumulation draws a fresh mask; a checkpoint resumes the
sequence exactly), train = 0 in `evaluate` (dropout is the identity there, as in eval mode).
The mask depends on no parameter (integers, a boolean and constants), so the gradient of
y = x * mask is the mask times the output's gradient.

Random masks cannot match torch's (its generator is a different one), so loss curves with
p > 0 are judged statistically (docs/training.md), not against torch; `keep_mask` is the same
draw in numpy, the reference the tests check the compiled step against.
"""

from __future__ import annotations

import math

import numpy as np

GOLDEN = 0x9E3779B9
MIX = 0x85EBCA77
KEY_NAME = "anychip_dropout_key"
_M1, _M2 = 0x85EBCA6B, 0xC2B2AE35


def threshold(p: float) -> int:
    """The 24-bit draw is kept when >= this (P(keep) = 1 - threshold / 2**24 ~ 1 - p)."""
    return int(math.ceil(float(p) * (1 << 24)))


def _fmix_np(h):
    h = np.asarray(h, dtype=np.uint32)
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(_M1)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(_M2)
    return h ^ (h >> np.uint32(16))


def keep_mask(shape, p: float, seed: int, counter: int, node: int) -> np.ndarray:
    """The boolean keep mask the compiled step draws for one Dropout (numpy reference)."""
    with np.errstate(over="ignore"):
        k1 = _fmix_np(np.uint32(seed) + np.uint32(node) * np.uint32(GOLDEN))
        k2 = _fmix_np(np.uint32(counter) * np.uint32(MIX) + k1)
        index = np.arange(int(np.prod(shape)), dtype=np.uint32).reshape(shape)
        h = _fmix_np(_fmix_np(index ^ k2) + k1)
    return (h & np.uint32(0xFFFFFF)) >= np.uint32(threshold(p))


def _fmix(bb, h):
    from tvm import relax

    op = relax.op

    def u(value):
        return relax.const(value, "uint32")

    h = bb.emit(op.bitwise_xor(h, op.right_shift(h, u(16))))
    h = bb.emit(op.multiply(h, u(_M1)))
    h = bb.emit(op.bitwise_xor(h, op.right_shift(h, u(13))))
    h = bb.emit(op.multiply(h, u(_M2)))
    return bb.emit(op.bitwise_xor(h, op.right_shift(h, u(16))))


def dropout_mask(bb, x, p: float, key, node: int):
    """Emit the float mask (0 or 1/(1-p), x's dtype and shape; 1 when key[2] == 0)."""
    from tvm import relax

    op = relax.op

    def u(value):
        return relax.const(value, "uint32")

    shape = [int(d) for d in x.ty.shape]
    dtype = str(x.ty.dtype.dtype if hasattr(x.ty.dtype, "dtype") else x.ty.dtype)
    seed = bb.emit(op.take(key, relax.const(0, "int64"), axis=0))
    counter = bb.emit(op.take(key, relax.const(1, "int64"), axis=0))
    train = bb.emit(op.take(key, relax.const(2, "int64"), axis=0))
    k1 = _fmix(bb, bb.emit(op.add(seed, u((node * GOLDEN) & 0xFFFFFFFF))))
    k2 = _fmix(bb, bb.emit(op.add(op.multiply(counter, u(MIX)), k1)))
    size = int(np.prod(shape))
    index = bb.emit(op.reshape(op.arange(0, size, 1, "int32"), shape))
    index = bb.emit(op.astype(index, "uint32"))
    h = _fmix(bb, bb.emit(op.bitwise_xor(index, k2)))
    h = _fmix(bb, bb.emit(op.add(h, k1)))
    # the low 24 bits: TVM's integer-bound analysis mis-bounds the fused uint32 hash and folds
    # `h >> 8 >= t` to true; `h & mask` has the bound [0, mask] whatever it thinks of h
    draw = bb.emit(op.bitwise_and(h, u(0xFFFFFF)))
    keep = bb.emit(op.greater_equal(draw, u(threshold(p))))
    scale = relax.const(1.0 / (1.0 - p), dtype)
    mask = bb.emit(op.where(keep, scale, relax.const(0.0, dtype)))
    return bb.emit(op.where(op.equal(train, u(0)), relax.const(1.0, dtype), mask))


def rewrite_dropouts(func, rates: list[float], markers: dict, key):
    """multiply(x, marker_i) -> x * mask_i, the masks drawn from `key` with rates[i]. The ONNX
    graph marks Dropout number i as x * anychip_dropout_i (graph.py); `markers` maps those
    Relax input vars to i."""
    import tvm
    from tvm import relax

    from ..errors import AnychipError

    found: list[int] = []

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):
        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.multiply":
                return call
            a, b = call.args
            if b not in markers:
                a, b = b, a
            if b not in markers:
                return call
            node = markers[b]
            found.append(node)
            mask = dropout_mask(self.builder_, a, rates[node], key, node)
            return relax.op.multiply(a, mask)

    func = Rewrite().visit_expr(func)
    if sorted(found) != list(range(len(rates))):
        raise AnychipError(f"{len(rates)} Dropout nodes in the graph, {len(found)} found in the "
                           f"imported module; report the model.")
    return func
