"""Gradients for the Relax operators transformers use that TVM 0.27 cannot differentiate.

TVM's `relax.transform.Gradient` looks up each operator's "FPrimalGradient" attribute and stops
at the first operator without one. Transformer graphs need several that TVM 0.27 lacks
(squeeze in nn.TransformerEncoderLayer's attention, strided_slice in rotary embeddings and ViT's
class token, erf in exact GELU, layer_norm/rms_norm/gelu when the graph keeps them fused).
They are registered here exactly as TVM registers its own (`register_gradient`, i.e. the op
attribute "FPrimalGradient"), and only where TVM has none: a later TVM's own gradient wins.

Every function returns one adjoint per call argument (`no_grad` for non-tensor arguments such
as a slice's bounds), built from forward Relax operators so that every backend lowers them as
it lowers inference. `register()` is idempotent; compile_training calls it.
`missing_gradients(mod)` lists what is still not differentiable, for the refusal message.
"""

from __future__ import annotations

import contextvars
import math

_REGISTERED = False
# {parameter Var name: row}: an Embedding's padding_idx for take_grad, set by training/step.py
# while Relax differentiates one backbone
PADDING_ROWS: contextvars.ContextVar[dict] = contextvars.ContextVar("padding_rows", default={})


def _shape(expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def _dtype(expr) -> str:
    return expr.ty.dtype.dtype if hasattr(expr.ty.dtype, "dtype") else str(expr.ty.dtype)


def _axes(values, ndim: int) -> list[int]:
    return sorted(int(a) % ndim for a in values)


def _ints(expr) -> list[int]:
    """A strided_slice bound (a tuple of PrimValues or a ShapeExpr) as Python ints."""
    fields = expr.fields if hasattr(expr, "fields") else expr.values
    return [int(getattr(f, "value", f)) for f in fields]


def _number(prim_value) -> float:
    value = prim_value.value
    return float(getattr(value, "value", value))


def _c(value: float, dtype: str):
    from tvm import relax

    return relax.const(value, dtype)


# -- shape manipulation --------------------------------------------------------------------------

def squeeze_grad(orig_var, orig_call, output_grad, ctx):
    """y = squeeze(x, axis): the adjoint is reshaped back to x's shape."""
    from tvm.relax.op import reshape

    return [reshape(output_grad, orig_call.args[0].ty.shape)]


def strided_slice_plan(orig_call):
    """Per sliced axis: (axis, begin, stride, count) in positive form, or None when a stride is
    negative or zero (not differentiable here: refused with the operator's name)."""
    x = orig_call.args[0]
    shape = _shape(x)
    axes = _ints(orig_call.args[1])
    begins, ends = _ints(orig_call.args[2]), _ints(orig_call.args[3])
    strides = _ints(orig_call.args[4]) if len(orig_call.args) > 4 else [1] * len(axes)
    out = _shape(orig_call)
    plan = []
    for i, axis in enumerate(axes):
        axis %= len(shape)
        stride = strides[i] if i < len(strides) else 1
        if stride <= 0:
            return None
        dim = shape[axis]
        begin = begins[i] + dim if begins[i] < 0 else begins[i]
        begin = min(max(begin, 0), dim)
        end = ends[i] + dim if ends[i] < 0 else ends[i]
        end = min(max(end, 0), dim)
        count = max(0, -(-(end - begin) // stride))
        if out is not None and out[axis] != count:
            return None
        plan.append((axis, begin, stride, count))
    return plan


def strided_slice_grad(orig_var, orig_call, output_grad, ctx):
    """y = x[begin:end:stride] on some axes: the adjoint goes back to the sliced positions and
    zeros elsewhere. Per axis, a stride s > 1 first interleaves s - 1 zeros after each element
    (concat on a new axis + reshape), then zero padding restores the cut borders."""
    from tvm import relax
    from tvm.relax.op import concat, expand_dims, reshape, zeros
    from tvm.relax.op import strided_slice as slice_op
    from tvm.relax.op.grad import no_grad
    from tvm.relax.op.nn import pad

    x = orig_call.args[0]
    shape, dtype = _shape(x), _dtype(x)
    plan = strided_slice_plan(orig_call)
    grad = output_grad
    current = _shape(orig_call)
    for axis, begin, stride, count in plan:
        if count == 0:
            return [zeros(relax.ShapeExpr(shape), dtype)] + [
                no_grad(a) for a in orig_call.args[1:]]
        if stride > 1:
            fill = list(current)
            fill.insert(axis + 1, stride - 1)
            spread = concat([expand_dims(grad, axis + 1), zeros(relax.ShapeExpr(fill), dtype)],
                            axis + 1)
            wide = list(current)
            wide[axis] = count * stride
            grad = reshape(spread, wide)
            grad = slice_op(grad, [axis], [0], [(count - 1) * stride + 1])
        span = (count - 1) * stride + 1
        width = [0] * (2 * len(shape))
        width[2 * axis] = begin
        width[2 * axis + 1] = shape[axis] - begin - span
        grad = pad(grad, width, "constant", 0.0)
        current = list(current)
        current[axis] = shape[axis]
    return [grad] + [no_grad(a) for a in orig_call.args[1:]]


def flip_grad(orig_var, orig_call, output_grad, ctx):
    """y = flip(x, axis): flipping the adjoint back."""
    from tvm.relax.op import flip

    return [flip(output_grad, orig_call.attrs.axis)]


def pad_grad(orig_var, orig_call, output_grad, ctx):
    """y = pad(x, width) in constant mode: the adjoint of x is the interior of y's adjoint."""
    from tvm.relax.op import strided_slice as slice_op

    x = orig_call.args[0]
    width = [int(w) for w in orig_call.attrs.pad_width]
    shape = _shape(x)
    axes = list(range(len(shape)))
    begin = [width[2 * a] for a in axes]
    end = [width[2 * a] + shape[a] for a in axes]
    grads = [slice_op(output_grad, axes, begin, end)]
    if len(orig_call.args) > 1:
        from tvm.relax.op.grad import no_grad

        grads += [no_grad(a) for a in orig_call.args[1:]]
    return grads


def tril_grad(orig_var, orig_call, output_grad, ctx):
    """y = tril(x, k): the adjoint keeps the same triangle."""
    from tvm.relax.op import tril
    from tvm.relax.op.grad import no_grad

    return [tril(output_grad, orig_call.args[1]), no_grad(orig_call.args[1])]


def take_grad(orig_var, orig_call, output_grad, ctx):
    """y = take(x, indices, axis) with indices of any rank. TVM's own gradient lowers only 1-D
    indices (its take_backward kernel asserts on the embedding lookup's [batch, seq] ids and on
    the 0-d index of `qkv[0]`), so indices are flattened to 1-D and the adjoint reshaped to
    match; the kernel then scatter-adds as before (repeated ids accumulate).

    take_backward scatters without a bounds check, so an out-of-range index (hostile or wrong
    data: the forward's safe take gives NaN for it) would write outside the gradient buffer:
    such indices scatter a zero row at index 0 instead. The importer has already made ONNX's
    negative indices positive, so in range is 0 <= i < extent. Lookups of a torch Embedding's
    padding_idx (PADDING_ROWS, set around the differentiation by training/step.py) add no
    gradient either, as in torch."""
    from tvm import relax
    from tvm.relax.op import (greater_equal, less, logical_and, not_equal, reshape, where,
                              zeros, zeros_like)
    from tvm.relax.op.grad import no_grad, take_backward

    x, indices = orig_call.args
    axis = orig_call.attrs.axis
    shape = _shape(x)
    axis = 0 if axis is None else int(axis) % len(shape)
    count = 1
    for d in _shape(indices):
        count *= d
    flat_indices = reshape(indices, [count])
    flat_grad = reshape(output_grad, shape[:axis] + [count] + shape[axis + 1:])
    index_dtype = str(indices.ty.dtype)
    valid = logical_and(greater_equal(flat_indices, relax.const(0, index_dtype)),
                        less(flat_indices, relax.const(shape[axis], index_dtype)))
    safe_indices = where(valid, flat_indices, zeros_like(flat_indices))
    pad = PADDING_ROWS.get().get(getattr(x, "name", None))
    if pad is not None and axis == 0:   # an Embedding's padding_idx: its lookups add nothing
        valid = logical_and(valid, not_equal(flat_indices, relax.const(pad, index_dtype)))
    row_valid = reshape(valid, [1] * axis + [count] + [1] * (len(shape) - axis - 1))
    grad_dtype = str(output_grad.ty.dtype)
    safe_grad = where(row_valid, flat_grad, zeros([], grad_dtype))
    return [take_backward(safe_grad, x, safe_indices, axis), no_grad(indices)]


# -- elementwise ---------------------------------------------------------------------------------

def erf_grad(orig_var, orig_call, output_grad, ctx):
    """d erf(x) = 2 / sqrt(pi) * exp(-x^2)."""
    from tvm.relax.op import exp, multiply, negative

    x = orig_call.args[0]
    dtype = _dtype(x)
    slope = multiply(_c(2.0 / math.sqrt(math.pi), dtype), exp(negative(multiply(x, x))))
    return [multiply(output_grad, slope)]


def gelu_grad(orig_var, orig_call, output_grad, ctx):
    """gelu(x) = x * Phi(x): d = Phi(x) + x * phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2."""
    from tvm.relax.op import add, erf, exp, multiply

    x = orig_call.args[0]
    dtype = _dtype(x)
    cdf = multiply(_c(0.5, dtype), add(_c(1.0, dtype), erf(multiply(x, _c(math.sqrt(0.5), dtype)))))
    pdf = multiply(_c(1.0 / math.sqrt(2.0 * math.pi), dtype),
                   exp(multiply(_c(-0.5, dtype), multiply(x, x))))
    return [multiply(output_grad, add(cdf, multiply(x, pdf)))]


def gelu_tanh_grad(orig_var, orig_call, output_grad, ctx):
    """gelu_tanh(x) = x/2 (1 + tanh(u)), u = k (x + 0.044715 x^3), k = sqrt(2/pi):
    d = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 * 0.044715 x^2)."""
    from tvm.relax.op import add, multiply, subtract, tanh

    x = orig_call.args[0]
    dtype = _dtype(x)
    k, a = math.sqrt(2.0 / math.pi), 0.044715
    x2 = multiply(x, x)
    t = tanh(multiply(_c(k, dtype), add(x, multiply(_c(a, dtype), multiply(x2, x)))))
    du = multiply(_c(k, dtype), add(_c(1.0, dtype), multiply(_c(3 * a, dtype), x2)))
    left = multiply(_c(0.5, dtype), add(_c(1.0, dtype), t))
    right = multiply(multiply(_c(0.5, dtype), x), multiply(subtract(_c(1.0, dtype),
                                                                    multiply(t, t)), du))
    return [multiply(output_grad, add(left, right))]


def rsqrt_grad(orig_var, orig_call, output_grad, ctx):
    """y = x^(-1/2): d = -y^3 / 2."""
    from tvm.relax.op import multiply

    dtype = _dtype(orig_call.args[0])
    cube = multiply(orig_var, multiply(orig_var, orig_var))
    return [multiply(output_grad, multiply(_c(-0.5, dtype), cube))]


def square_grad(orig_var, orig_call, output_grad, ctx):
    """y = x^2: d = 2x."""
    from tvm.relax.op import multiply

    x = orig_call.args[0]
    return [multiply(output_grad, multiply(_c(2.0, _dtype(x)), x))]


def clip_grad(orig_var, orig_call, output_grad, ctx):
    """y = clip(x, lo, hi): the adjoint passes where lo <= x <= hi (torch's clamp rule)."""
    from tvm import relax
    from tvm.relax.op import greater_equal, less_equal, logical_and, where
    from tvm.relax.op.grad import no_grad

    x = orig_call.args[0]
    dtype = _dtype(x)
    lo = relax.const(_number(orig_call.args[1]), dtype)
    hi = relax.const(_number(orig_call.args[2]), dtype)
    inside = logical_and(greater_equal(x, lo), less_equal(x, hi))
    return [where(inside, output_grad, _c(0.0, dtype)), no_grad(orig_call.args[1]),
            no_grad(orig_call.args[2])]


def leakyrelu_grad(orig_var, orig_call, output_grad, ctx):
    """y = x > 0 ? x : alpha x."""
    from tvm.relax.op import greater, multiply, where

    x = orig_call.args[0]
    dtype = _dtype(x)
    alpha = float(orig_call.attrs.alpha)
    return [where(greater(x, _c(0.0, dtype)), output_grad,
                  multiply(output_grad, _c(alpha, dtype)))]


# -- normalization -------------------------------------------------------------------------------

def _normalized(x, axes, epsilon, dtype):
    """(x - mean) * rstd and rstd, over `axes` (kept as size-1 dims)."""
    from tvm.relax.op import add, divide, mean, sqrt, subtract, variance

    centered = subtract(x, mean(x, axes, keepdims=True))
    rstd = divide(_c(1.0, dtype), sqrt(add(variance(x, axes, keepdims=True), _c(epsilon, dtype))))
    return centered, rstd


def layer_norm_grad(orig_var, orig_call, output_grad, ctx):
    """y = xhat * gamma + beta, xhat = (x - mean) * rstd over `axes`:
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma;
    dgamma = sum(dy * xhat), dbeta = sum(dy) over the other axes."""
    from tvm.relax.op import mean, multiply, reshape, subtract, sum

    x, gamma, _beta = orig_call.args
    shape, dtype = _shape(x), _dtype(x)
    axes = _axes(orig_call.attrs.axes, len(shape))
    others = [a for a in range(len(shape)) if a not in axes]
    norm_shape = [1 if a in others else shape[a] for a in range(len(shape))]
    centered, rstd = _normalized(x, axes, float(orig_call.attrs.epsilon), dtype)
    xhat = ctx.emit(multiply(centered, rstd))
    dxhat = multiply(output_grad, reshape(gamma, norm_shape)) if orig_call.attrs.scale \
        else output_grad
    dxhat = ctx.emit(dxhat)
    inner = subtract(subtract(dxhat, mean(dxhat, axes, keepdims=True)),
                     multiply(xhat, mean(multiply(dxhat, xhat), axes, keepdims=True)))
    param_shape = gamma.ty.shape

    def reduce(value):
        return reshape(sum(value, others), param_shape) if others else reshape(value, param_shape)

    return [multiply(rstd, inner), reduce(multiply(output_grad, xhat)), reduce(output_grad)]


def rms_norm_grad(orig_var, orig_call, output_grad, ctx):
    """y = x * r * w, r = 1 / sqrt(mean(x^2) + eps) over `axes`:
    dx = r * (dxw - x * r^2 * mean(dxw * x)), dxw = dy * w; dw = sum(dy * x * r)."""
    from tvm.relax.op import add, divide, mean, multiply, reshape, sqrt, subtract, sum

    x, weight = orig_call.args
    shape, dtype = _shape(x), _dtype(x)
    axes = _axes(orig_call.attrs.axes, len(shape))
    others = [a for a in range(len(shape)) if a not in axes]
    norm_shape = [1 if a in others else shape[a] for a in range(len(shape))]
    r = ctx.emit(divide(_c(1.0, dtype), sqrt(add(mean(multiply(x, x), axes, keepdims=True),
                                                 _c(float(orig_call.attrs.epsilon), dtype)))))
    dxw = ctx.emit(multiply(output_grad, reshape(weight, norm_shape)))
    dx = multiply(r, subtract(dxw, multiply(multiply(x, multiply(r, r)),
                                            mean(multiply(dxw, x), axes, keepdims=True))))
    dw = multiply(output_grad, multiply(x, r))
    dw = reshape(sum(dw, others), weight.ty.shape) if others else reshape(dw, weight.ty.shape)
    return [dx, dw]


GRADIENTS = {
    "relax.squeeze": squeeze_grad,
    "relax.strided_slice": strided_slice_grad,
    "relax.flip": flip_grad,
    "relax.nn.pad": pad_grad,
    "relax.tril": tril_grad,
    "relax.erf": erf_grad,
    "relax.nn.gelu": gelu_grad,
    "relax.nn.gelu_tanh": gelu_tanh_grad,
    "relax.rsqrt": rsqrt_grad,
    "relax.square": square_grad,
    "relax.clip": clip_grad,
    "relax.nn.leakyrelu": leakyrelu_grad,
    "relax.nn.layer_norm": layer_norm_grad,
    "relax.nn.rms_norm": rms_norm_grad,
}


# Registered above TVM's own level (10): TVM 0.27's gradient exists but fails for these forms.
OVERRIDES = {"relax.take": take_grad}


def register() -> None:
    """Register every gradient above that TVM does not already have, and the OVERRIDES (once
    per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import tvm
    from tvm.relax.op.base import register_gradient

    for name, fn in GRADIENTS.items():
        if tvm.ir.Op.get(name).get_attr("FPrimalGradient") is None:
            register_gradient(name, fn)
    for name, fn in OVERRIDES.items():
        register_gradient(name, fn, level=11)
    _REGISTERED = True
