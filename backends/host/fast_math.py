"""float32 exp and erf as polynomials the host kernels can vectorize.

TVM lowers `exp` to LLVM's `llvm.exp` and `erf` to a call of libm's `erff`; LLVM has no
vector library on this build, so both stay one scalar libm call per element inside an
otherwise vectorized loop. In a BERT train step that made GELU's forward (`erf`) and its
gradient (`exp`) the largest TVM kernels (docs/performance.md). `polynomial_exp_erf` rewrites
float32 `relax.exp` / `relax.erf` calls, after library dispatch, into elementwise kernels
(TE) of plain arithmetic:

- exp: Cephes' expf: n = round(x log2 e), r = x - n ln 2 (ln 2 in two parts), a degree-7
  polynomial in r, times 2^n built from the exponent bits (in two factors, so that results
  near the float32 range's ends, denormals included, come out right); x > 88.72 gives inf,
  x < -103.97 gives 0, NaN stays NaN;
- erf: the rational approximation of Eigen's generic_fast_erf_float (an odd degree-13
  numerator over an even degree-8 denominator) on x clamped to [-4, 4]; NaN stays NaN.
- tanh: Eigen's generic_fast_tanh_float (an odd degree-13 numerator over an even degree-6
  denominator) on x clamped to +-7.905; x itself below 4e-4; NaN stays NaN.

Both are within a few float32 ulp of the exact values (tests/backends/test_fast_math.py
measures it against float64). Float64 (the gradient tests) and reduced dtypes are left as
they are. Intermediate values are `Let`-bound, so the expression a fused kernel inlines stays
small (backends/host/schedule.py's INLINE_MAX_NODES).
"""

from __future__ import annotations

# Cephes expf
_EXP_HI = 88.72283905206835      # above: inf
_EXP_LO = -103.97208              # below: 0 (the smallest denormal is exp(-103.28))
_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
             1.6666665459e-1, 5.0000001201e-1)

# Eigen's generic_fast_erf_float
_ERF_ALPHA = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
              -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
              -1.60960333262415e-02)
_ERF_BETA = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
             -7.37332916720468e-03, -1.42647390514189e-02)


def _f(value: float):
    from tvm import tirx

    return tirx.const(value, "float32")


def _horner(x, coefficients):
    acc = _f(coefficients[0])
    for c in coefficients[1:]:
        acc = acc * x + _f(c)
    return acc


def _let(name: str, dtype: str, value, body):
    """body(var) with var bound to value once (a tirx.Let)."""
    from tvm import tirx

    var = tirx.Var(name, dtype)
    return tirx.Let(var, value, body(var))


def exp_expr(x):
    """exp(x) for a float32 PrimExpr, as arithmetic."""
    from tvm import tirx

    def body(xv):
        clamped = tirx.max(tirx.min(xv, _f(_EXP_HI)), _f(_EXP_LO))

        def with_n(n):
            def with_r(r):
                y = _horner(r, _EXP_POLY) * r * r + r + _f(1.0)
                ni = tirx.Cast("int32", n)
                half = tirx.shift_right(ni, tirx.const(1, "int32"))
                rest = ni - half
                scale = [tirx.reinterpret("float32", tirx.shift_left(
                    part + tirx.const(127, "int32"), tirx.const(23, "int32")))
                    for part in (half, rest)]
                return y * scale[0] * scale[1]

            return _let("exp_r", "float32",
                        clamped - n * _f(_LN2_HI) - n * _f(_LN2_LO), with_r)

        value = _let("exp_n", "float32", tirx.floor(clamped * _f(_LOG2E) + _f(0.5)), with_n)
        value = tirx.Select(xv > _f(_EXP_HI), _f(float("inf")), value)
        value = tirx.Select(xv < _f(_EXP_LO), _f(0.0), value)
        return tirx.Select(tirx.isnan(xv), xv, value)

    return _let("exp_x", "float32", x, body)


def erf_expr(x):
    """erf(x) for a float32 PrimExpr, as arithmetic."""
    from tvm import tirx

    def body(xv):
        def with_c(c):
            def with_c2(c2):
                return tirx.Select(tirx.isnan(xv), xv,
                                   c * _horner(c2, _ERF_ALPHA) / _horner(c2, _ERF_BETA))

            return _let("erf_x2", "float32", c * c, with_c2)

        return _let("erf_c", "float32", tirx.max(tirx.min(xv, _f(4.0)), _f(-4.0)), with_c)

    return _let("erf_x", "float32", x, body)


# sigmoid's exp argument is clamped to +-_SIG_CLAMP: 2^n then stays a normal float32 (n in
# [-126, 126]), so one scale factor and no overflow or denormal case to select; below
# -_SIG_CLAMP sigmoid is under the smallest normal float32
_SIG_CLAMP = 87.3366   # ln of the smallest normal float32 is -87.33654


def sigmoid_expr(x):
    """sigmoid(x) = 1 / (1 + exp(-x)) for a float32 PrimExpr: what TVM's own sigmoid
    computes, with exp_expr's polynomial but a cheaper exp around it. exp(-x) is needed only
    on [-87.3366, 87.3366]: beyond, sigmoid is 1 in float32, or below the smallest normal
    float32 (flushed to 0, as -inf gives). One scale factor and no inf/denormal selects:
    about a third fewer instructions than 1 / (1 + exp_expr(-x)) (EfficientNet's SiLU
    epilogues: 6.2 million sigmoids a run). NaN stays NaN."""
    from tvm import tirx

    def body(xv):
        t = tirx.max(tirx.min(-xv, _f(_SIG_CLAMP)), _f(-_SIG_CLAMP))

        def with_n(n):
            def with_r(r):
                y = _horner(r, _EXP_POLY) * r * r + r + _f(1.0)
                scale = tirx.reinterpret("float32", tirx.shift_left(
                    tirx.Cast("int32", n) + tirx.const(127, "int32"),
                    tirx.const(23, "int32")))
                return _f(1.0) / (_f(1.0) + y * scale)

            return _let("sig_r", "float32", t - n * _f(_LN2_HI) - n * _f(_LN2_LO), with_r)

        value = _let("sig_n", "float32", tirx.floor(t * _f(_LOG2E) + _f(0.5)), with_n)
        value = tirx.Select(xv < _f(-_SIG_CLAMP), _f(0.0), value)
        return tirx.Select(tirx.isnan(xv), xv, value)

    return _let("sig_x", "float32", x, body)


# Eigen's generic_fast_tanh_float: an odd degree-13 numerator over an even degree-6
# denominator on x clamped to +-_TANH_CLAMP (where tanh rounds to +-1 in float32), x itself
# below _TANH_TINY
_TANH_ALPHA = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
               5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
               4.89352455891786e-03)
_TANH_BETA = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
              4.89352518554385e-03)
_TANH_CLAMP = 7.90531110763549805
_TANH_TINY = 0.0004


def tanh_expr(x):
    """tanh(x) for a float32 PrimExpr as a rational function (see above): within 7 ulp of
    float64 tanh (tests/backends/host/test_fast_math.py), +-1 at +-inf, NaN kept, the sign of
    zero kept. TVM's tanh is a scalar libm call per element: an ESPCN-like network's two tanh
    kernels took 8.8 of its 19 ms."""
    from tvm import tirx

    def body(xv):
        c = tirx.max(tirx.min(xv, _f(_TANH_CLAMP)), _f(-_TANH_CLAMP))

        def with_c2(c2):
            return c * _horner(c2, _TANH_ALPHA) / _horner(c2, _TANH_BETA)

        value = _let("tanh_c2", "float32", c * c, with_c2)
        # past 9, float32 tanh is +-1 exactly (the clamped rational gives 1 - 4 ulp)
        value = tirx.Select(tirx.abs(xv) > _f(9.0), tirx.Select(xv > _f(0.0), _f(1.0),
                                                                   _f(-1.0)), value)
        value = tirx.Select(tirx.abs(xv) < _f(_TANH_TINY), xv, value)
        return tirx.Select(tirx.isnan(xv), xv, value)

    return _let("tanh_x", "float32", x, body)


def gelu_expr(x):
    """gelu(x) = x (1 + erf(x / sqrt 2)) / 2, with erf_expr: relax.nn.gelu's definition."""
    return _let("gelu_x", "float32", x, lambda xv: xv * (
        _f(0.5) + _f(0.5) * erf_expr(xv * _f(0.7071067811865476))))


def gelu_tanh_expr(x):
    """gelu_tanh(x) = x (1 + tanh(y)) / 2 with y = sqrt(2/pi) (x + 0.044715 x^3), computed as
    x sigmoid(2y) (the same value: (1 + tanh y) / 2 = sigmoid(2y)), with sigmoid_expr: no
    tanh (a scalar libm call) and no cancellation near y = 0."""
    def body(xv):
        y2 = _f(2 * 0.7978845608028654) * (xv + _f(0.044715) * xv * xv * xv)
        return xv * sigmoid_expr(y2)

    return _let("gelu_x", "float32", x, body)


def silu_expr(x):
    """silu(x) = x sigmoid(x), with sigmoid_expr."""
    return _let("silu_x", "float32", x, lambda xv: xv * sigmoid_expr(xv))


def _elementwise(expr_fn, name: str):
    def compute(x):
        from tvm import te

        return te.compute(x.shape, lambda *i: expr_fn(x(*i)), name=name, tag="elemwise")

    return compute


# softmax rows whose length no vector divides have their max and sum reduced over the length
# rounded up to this many lanes (every target's vector width divides it)
ROW_ROUNDING = 16


def _softmax(x, axis: int):
    """softmax along `axis` as TOPI computes it (max, exp of the difference, sum, divide)
    with exp_expr for the exponential: the kernel's four blocks keep TOPI's shape, which
    the host's reduction rules schedule.

    A last axis of static length L that ROW_ROUNDING does not divide (ViT's 197 tokens, any
    prompt length) gets its max, exponentials and sum over L rounded up, the padding read as
    -inf (exp gives 0, so the sum is unchanged), each read index clamped to the row: whole
    vectors for backends/host/schedule.py's row kernel, which left such rows to LLVM, whose
    float max and sum stayed scalar chains (ViT's softmax at batch 8: 0.8 ms a call, ONNX
    Runtime's 0.2). The output keeps length L."""
    from tvm import te, tirx

    shape = list(x.shape)
    axis = axis % len(shape)
    rows = shape[:axis] + shape[axis + 1:]
    length = shape[axis]
    padded = length
    if axis == len(shape) - 1 and isinstance(length, tirx.IntImm) and \
            int(length) > ROW_ROUNDING and int(length) % ROW_ROUNDING:
        padded = tirx.IntImm(str(length.ty), -(-int(length) // ROW_ROUNDING) * ROW_ROUNDING)

    def full(i, k):
        return (*i[:axis], k, *i[axis:])

    def row(i):
        return (*i[:axis], *i[axis + 1:])

    def read(i, k):   # x along the axis, -inf past its end (only when rounded up)
        if padded is length:
            return x(*full(i, k))
        last = tirx.IntImm(str(length.ty), int(length) - 1)
        return tirx.Select(k < length, x(*full(i, tirx.min(k, last))),
                           tirx.const(float("-inf"), x.dtype))

    k1 = te.reduce_axis((0, padded), name="k1")
    peak = te.compute(rows, lambda *i: te.max(read(i, k1), axis=k1), name="softmax_max")
    exps = te.compute([*rows, padded] if padded is not length else shape,
                      lambda *j: exp_expr(read(j[:-1], j[-1]) - peak(*j[:-1]))
                      if padded is not length else exp_expr(x(*j) - peak(*row(j))),
                      name="softmax_exp")
    k2 = te.reduce_axis((0, padded), name="k2")
    if padded is not length:
        total = te.compute(rows, lambda *i: te.sum(exps(*i, k2), axis=k2), name="softmax_sum")
        return te.compute(shape, lambda *i: exps(*i) / total(*i[:-1]), name="softmax_norm")
    total = te.compute(rows, lambda *i: te.sum(exps(*full(i, k2)), axis=k2), name="softmax_sum")
    return te.compute(shape, lambda *i: exps(*i) / total(*row(i)), name="softmax_norm")


def polynomial_exp_erf(mod):
    """float32 relax.exp / erf / sigmoid / tanh / nn.gelu / gelu_tanh / silu / softmax -> TE
    kernels of the expressions above (every Relax function of `mod`; what the library took
    is already a call of it); returns (module, number of calls rewritten)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from anychip.compiler.relax_info import dtype_of

    kernels = {tvm.ir.Op.get("relax.exp"): _elementwise(exp_expr, "poly_exp"),
               tvm.ir.Op.get("relax.erf"): _elementwise(erf_expr, "poly_erf"),
               tvm.ir.Op.get("relax.sigmoid"): _elementwise(sigmoid_expr, "poly_sigmoid"),
               tvm.ir.Op.get("relax.nn.gelu"): _elementwise(gelu_expr, "poly_gelu"),
               tvm.ir.Op.get("relax.nn.gelu_tanh"): _elementwise(gelu_tanh_expr, "poly_gelu_tanh"),
               tvm.ir.Op.get("relax.nn.silu"): _elementwise(silu_expr, "poly_silu"),
               tvm.ir.Op.get("relax.tanh"): _elementwise(tanh_expr, "poly_tanh")}
    softmax_op = tvm.ir.Op.get("relax.nn.softmax")
    count = [0]

    @mutator
    class Rewrite(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not isinstance(call.op, tvm.ir.Op) or dtype_of(call.args[0]) != "float32":
                return call
            if call.op.same_as(softmax_op):
                count[0] += 1
                return self.builder_.call_te(_softmax, call.args[0], int(call.attrs.axis),
                                             primfunc_name_hint="poly_softmax")
            kernel = kernels.get(call.op)
            if kernel is None:
                return call
            count[0] += 1
            return self.builder_.call_te(kernel, call.args[0])

    rewrite = Rewrite(mod)
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            rewrite.builder_.update_func(gvar, rewrite.visit_expr(func))
    return rewrite.builder_.get(), count[0]
