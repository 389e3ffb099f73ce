"""Target-neutral Relax passes the driver applies after import, before any backend.

Only what every backend needs for safety or correctness lives here; performance and
target-specific rewrites belong to each backend's `lower`.
"""

from __future__ import annotations

from .relax_functions_pass import relax_functions_pass as _relax_functions_pass


def safe_take():
    """Out-of-range Gather indices never read out of bounds (docs/security.md case 12).

    TVM's importer emits `relax.take(mode="fast")`, whose out-of-range indices read arbitrary
    memory. Float results switch to mode "nan" (an out-of-range index yields NaN, which
    verification and users see), other dtypes to "clip". In-range indices are unaffected.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    take_op = tvm.ir.Op.get("relax.take")

    @mutator
    class _SafeTake(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            call = super().visit_call_(call)
            if call.op == take_op and call.attrs.mode == "fast":
                dtype = call.args[0].ty.dtype
                mode = "nan" if str(dtype).startswith(("float", "bfloat")) else "clip"
                return relax.op.take(call.args[0], call.args[1], call.attrs.axis, mode=mode)
            return call

    return _relax_functions_pass(_SafeTake, "AnychipSafeTake")


def small_integer_powers():
    """`Pow(x, 2)` and `Pow(x, 3)` with a constant exponent become products.

    Correctness, not speed: GPU code is compiled with fast math on most toolchains (TVM's NVRTC
    path always passes --use_fast_math), which turns powf into __powf = exp2(y*log2(x)): NaN
    for every negative x. RMSNorm's x^2 and tanh-GELU's x^3 see negative x all the time (found
    on an H100: llama's logits were all NaN). x*x is also what powf(x, 2) rounds to exactly.
    """
    import tvm
    import tvm_ffi
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    power_op = tvm.ir.Op.get("relax.power")

    def exponent(expr) -> int | None:
        if not isinstance(expr, tvm.ir.expr.GenericConst):   # relax constants in TVM 0.27
            return None
        try:
            value = expr.value.numpy()
        except Exception:  # noqa: BLE001 - a non-tensor literal
            return None
        if value.size != 1 or value.dtype.kind != "f":
            return None
        value = float(value.reshape(-1)[0])
        return int(value) if value in (2.0, 3.0) else None

    @mutator
    class _Powers(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            call = super().visit_call_(call)
            if call.op != power_op:
                return call
            n = exponent(call.args[1])
            base = call.args[0]
            base_ty = getattr(base, "ty", None)
            out_ty = getattr(call, "ty", None)
            if n is None or base_ty is None or out_ty is None or \
                    str(getattr(base_ty, "dtype", "")) != str(getattr(out_ty, "dtype", "")) or \
                    getattr(base_ty, "shape", None) is None or \
                    not tvm_ffi.structural_equal(base_ty.shape, out_ty.shape):
                return call   # broadcasting or a dtype change: leave it to power
            square = self.builder_.normalize(relax.op.multiply(base, base))
            return square if n == 2 else relax.op.multiply(square, base)

    return _relax_functions_pass(_Powers, "AnychipSmallIntegerPowers")


def target_neutral_passes() -> list:
    from .safe_indices import safe_index_ops

    return [safe_take(), safe_index_ops(), small_integer_powers()]
