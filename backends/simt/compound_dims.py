"""Kernels over a dim that is an affine expression of the symbols (`s // 20 - 1`) see that
dim as a symbol of their own.

wav2vec 2.0's and HuBERT's attention runs over `samples // 20 - 1` frames (the convolutional
feature extractor's output length). TVM 0.27's dlight GPU rules fail on kernels with such
extents: GeneralReduction on a softmax or norm ("the reduction block vars are not used to
index the output buffers", with `s` or `s // 20` alone it schedules, `s - 1` and `s + 1`
fail), Fallback on a plain transpose (an iter-map split whose "padding factor" it cannot
prove divisible): the models compiled for no GPU target.

Here each call whose tensor inputs have such a dim reads them through a `match_cast` to a
fresh symbol per expression, a shape argument naming the expression uses the symbol too, and
its output is cast back to the expression: the kernel sees plain symbols (bound by the VM
from the tensor's shape at run time), the graph keeps its dims, and the casts are run-time
checks that hold by construction. The price is fusion: FuseOps does not join kernels across
a match_cast, so only calls that need it are rewritten (dims built with + or - or *, not
plain symbols, constants, or a symbol's floor division, which the rules take).
"""

from __future__ import annotations

def _compound(dim) -> bool:
    """Whether a dim is an expression with an offset or a product (what dlight fails on)."""
    from tvm import tirx

    if isinstance(dim, (tirx.Var, tirx.IntImm)):
        return False
    if isinstance(dim, (tirx.FloorDiv, tirx.FloorMod)):
        return _compound(dim.a) or not isinstance(dim.b, tirx.IntImm)
    return True


def _unknown_shape(ty) -> bool:
    """Whether a type (a tensor's, or a tuple's of tensors) has a tensor of unknown shape."""
    from tvm import relax

    if isinstance(ty, relax.TupleType):
        return any(_unknown_shape(f) for f in ty.fields)
    return isinstance(ty, relax.TensorType) and not isinstance(ty.shape, relax.ShapeExpr)


def isolate_compound_dims(mod):
    """Returns (module, {symbol name: the expression it stands for}); one symbol per distinct
    expression in a function, shared by all its calls."""
    import tvm
    from tvm import relax, tirx
    from tvm.relax.expr_functor import PyExprMutator, mutator

    symbols: dict = {}   # expression (as TVMScript prints it) -> its symbol
    definitions: dict = {}

    def tensor_shape(expr):
        shape = getattr(getattr(expr, "ty", None), "shape", None)
        return shape if isinstance(shape, relax.ShapeExpr) else None

    @mutator
    class Isolate(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            new = super().visit_call_(call)
            if not isinstance(new, relax.Call) or not isinstance(new.op, tvm.ir.Op) \
                    or new.op.name.startswith(("relax.call_", "relax.builtin", "relax.vm.")):
                return new
            fresh: dict = {}
            for arg in new.args:
                shape = tensor_shape(arg) if isinstance(arg.ty, relax.TensorType) else None
                for d in shape.values if shape is not None else ():
                    if _compound(d) and str(d) not in fresh:
                        if str(d) not in symbols:
                            symbols[str(d)] = tirx.Var(f"dim_{len(definitions)}", d.ty)
                            definitions[symbols[str(d)].name] = d
                        fresh[str(d)] = symbols[str(d)]
            if not fresh:
                return new

            def plain(values):
                return [fresh.get(str(d), d) for d in values]

            cast = []   # (arg, its type in the fresh symbols) or (arg, None)
            for arg in new.args:
                shape = tensor_shape(arg) if isinstance(arg.ty, relax.TensorType) else None
                if shape is not None and any(str(d) in fresh for d in shape.values):
                    cast.append((arg, relax.TensorType(plain(shape.values), arg.ty.dtype)))
                elif isinstance(arg, relax.ShapeExpr):
                    cast.append((relax.ShapeExpr(plain(arg.values)), None))
                else:
                    cast.append((arg, None))
            # the op's type over the fresh symbols: where it loses the output's shape (two
            # dims the op must match are now different symbols), the call stays as it was
            trial = self.builder_.normalize(relax.Call(
                new.op, [relax.Var("t", ty) if ty is not None else arg for arg, ty in cast],
                new.attrs, new.ty_args))
            if _unknown_shape(trial.ty) != _unknown_shape(new.ty):
                return new
            args = [self.builder_.match_cast(arg, ty) if ty is not None else arg
                    for arg, ty in cast]
            value = self.builder_.emit(relax.Call(new.op, args, new.attrs, new.ty_args))
            return self.builder_.match_cast(value, new.ty)

    rewrite = Isolate(mod)
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            symbols.clear()   # a function's symbols are its own
            rewrite.builder_.update_func(gvar, rewrite.visit_expr(func))
    return rewrite.builder_.get(), definitions
