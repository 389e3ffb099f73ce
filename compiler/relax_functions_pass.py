"""One PyExprMutator applied to every Relax function of a module, as a module pass: the
shape of every anychip Relax rewrite (compiler/passes.py, compiler/safe_indices.py)."""

from __future__ import annotations


def relax_functions_pass(mutator_class, name: str):
    """A module pass that runs one PyExprMutator over every Relax function of the module."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        mutator_ = mutator_class(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mod[gvar] = mutator_.visit_expr(func)
        return mod

    return _pass
