"""Target-neutral Relax passes the driver applies after import, before any backend.

Only what every backend needs for safety or correctness lives here; performance and
target-specific rewrites belong to each backend's `lower`.
"""

from __future__ import annotations


def safe_take():
    """Out-of-range Gather indices never read out of bounds (reliability.md §2 case 12).

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

    @tvm.transform.module_pass(opt_level=0, name="AnychipSafeTake")
    def _pass(mod, _ctx):
        mutator_ = _SafeTake(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mod[gvar] = mutator_.visit_expr(func)
        return mod

    return _pass


def target_neutral_passes() -> list:
    return [safe_take()]
