"""Partition a Relax module by the pattern table and hand the matches to a library.

Two ways to realize a match, one stage:
- packed: the library emits a call to a packed function (R.call_pure_packed or
  R.call_dps_packed) that it registers in the process before the VM loads lib.so. This is how
  the cpu backend reaches oneDNN/MKL through torch: the wheel has no CPU BYOC library.
- codegen: the library names a TVM BYOC codegen (e.g. "cublas"); the composites are
  annotated for it and RunCodegen compiles them into lib.so, as TVM does for cuBLAS.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..relax_info import dtype_of, known_shape, static_shape
from .patterns import ROOTS, Pattern, all_patterns, by_name, clip_bounds


@dataclass
class Match:
    """One matched subgraph in library terms: the root op, its operands and the epilogue.

    Tensors are Relax expressions valid at the call site (variables or constants): `operands`
    are the root's, by the names of the pattern table (data, weight, gamma...); `bias` is the
    constant of the `bias` step, `residual` the tensor of the `residual` step.
    """

    pattern: Pattern
    attrs: Any                      # the root call's attrs (Conv2DAttrs, MatmulAttrs, ...)
    operands: dict[str, Any]
    out_ty: Any = None              # relax.TensorType of the result
    bias: Any = None
    residual: Any = None
    bounds: tuple[float, float] = ()   # a clip activation's (lo, hi)
    scale: Any = None               # attention: the constant the scores are divided by
    scale_op: str = ""              # attention: "divide" or "multiply"
    # matmul: operands given untransposed, for the library to read as transposed views (the
    # permute_dims of their last two axes was absorbed); only for a library that sets
    # `transposed_operands`
    transposed: tuple[str, ...] = ()

    @property
    def data(self):
        return self.operands["data"]

    @property
    def weight(self):
        return self.operands.get("weight")


@dataclass
class DispatchReport:
    """What the dispatch stage offloaded: per pattern name, how many calls."""

    library: str
    calls: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)   # root op -> calls left to TVM kernels
    transposed: int = 0   # matmul operands read as transposed views (no transpose kernel)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def as_dict(self) -> dict:
        return {"library": self.library, "calls": dict(sorted(self.calls.items())),
                "total": self.total, "kept_in_tvm": dict(sorted(self.kept.items())),
                "transposed_operands": self.transposed}


def structural_check(pattern: Pattern, annotated) -> bool:
    """Checks every library relies on: known shapes (static, or symbolic dims such as a
    dynamic batch: the library call gets the run's tensors), a bias that varies along one
    axis of the output only, a residual of the output's shape. The library then checks what
    it supports, such as which axis the bias runs along (`Library.accepts`)."""
    root = annotated["root"]
    out_shape = known_shape(root)
    if not pattern.constants_ok(annotated):
        return False
    if out_shape is None or any(known_shape(annotated[name]) is None
                                for name in pattern.operands):
        return False
    if "bias" in annotated and (bias_axis(annotated["bias"], out_shape) is None
                                or dtype_of(annotated["bias"]) != dtype_of(root)):
        return False
    residual = annotated.get("residual")
    return residual is None or (known_shape(residual) == out_shape
                                and dtype_of(residual) == dtype_of(root))


def bias_axis(bias, out_shape: tuple[int, ...]) -> int | None:
    """The output axis a bias runs along (its only dimension > 1, right-aligned), or None
    when it is not such a vector."""
    shape = static_shape(bias)
    if shape is None or len(shape) > len(out_shape):
        return None
    full = (1,) * (len(out_shape) - len(shape)) + shape
    axes = [i for i, d in enumerate(full) if d != 1]
    if len(axes) != 1 or full[axes[0]] != out_shape[axes[0]]:
        return None
    return axes[0]


def _intermediates_private(ctx) -> bool:
    """Only the pattern's final value may be used outside it: a library call computes the
    epilogue in place and has no intermediate results to hand out."""
    from tvm import relax

    fused = set(ctx.matched_bindings.keys())
    final = ctx.value_to_bound_var.get(ctx.matched_expr)
    for var in fused:
        if final is not None and var.same_as(final):
            continue
        if not isinstance(var, relax.DataflowVar):   # a function output
            return False
        if any(user not in fused for user in ctx.var_usages.get(var, [])):
            return False
    return True


def _match_from_composite(func, call_args, pattern: Pattern) -> Match:
    """Read a composite function (root binding, then one binding per epilogue step)."""
    from tvm import relax

    params = {p: a for p, a in zip(func.params, call_args)}

    def outer(expr):
        return params.get(expr, expr) if isinstance(expr, relax.Var) else expr

    bindings = [b for block in func.body.blocks for b in block.bindings]
    if pattern.root == "attention":   # matmul, divide|multiply, softmax, matmul
        scores, scaled, soft, out = (b.value for b in bindings)
        match = Match(pattern, soft.attrs, {"query": outer(scores.args[0]),
                                            "key_t": outer(scores.args[1]),
                                            "value": outer(out.args[1])})
        match.scale = outer(scaled.args[1])
        match.scale_op = str(scaled.op.name).rsplit(".", 1)[-1]
        match.out_ty = _ret_ty_at_call_site(func, call_args)
        return match
    root = bindings[0].value
    operands = {name: outer(arg) for name, arg in zip(pattern.operands, root.args)}
    match = Match(pattern, root.attrs, operands)
    previous = bindings[0].var
    for step, binding in zip(pattern.epilogue, bindings[1:]):
        if step in ("bias", "residual"):
            lhs, rhs = binding.value.args
            other = rhs if lhs.same_as(previous) else lhs
            setattr(match, step, outer(other))
        previous = binding.var
    if pattern.activation == "clip":   # the composite's last binding is the clip
        match.bounds = clip_bounds(bindings[-1].value)
    match.out_ty = _ret_ty_at_call_site(func, call_args)
    return match


def swaps_last_two(call) -> bool:
    """permute_dims whose axes swap the last two and keep the others in place."""
    from tvm import relax

    if not isinstance(call, relax.Call) or \
            str(getattr(call.op, "name", "")) != "relax.permute_dims":
        return False
    rank = getattr(call.ty, "ndim", -1)
    if rank is None or rank < 2:
        return False
    axes = call.attrs.axes
    if axes is None:        # reverse all axes: a swap of the last two only for a matrix
        return rank == 2
    return [int(a) for a in axes] == [*range(rank - 2), rank - 1, rank - 2]


def _absorb_transposes(mutator, match: Match) -> None:
    """A matmul operand bound to permute_dims of its last two axes (x @ W^T with W a parameter,
    a gradient's g^T @ x) is handed to the library untransposed and named in
    `match.transposed`: the library reads it as a transposed view, so no transpose kernel runs
    (DeadCodeElimination drops the permute_dims when nothing else uses it). Constants are left
    alone: their transpose was folded at compile time."""
    from tvm import relax

    absorbed = []
    for name in ("data", "weight"):
        value = match.operands[name]
        while isinstance(value, relax.Var):   # through `a = b` aliases
            value = mutator.lookup_binding(value)
        if swaps_last_two(value) and isinstance(value.args[0], relax.Var):
            match.operands[name] = value.args[0]
            absorbed.append(name)
    match.transposed = tuple(absorbed)


def _ret_ty_at_call_site(func, call_args):
    """The composite's result type in the caller's symbols: a symbolic model's composite has
    its own shape variables ('batch_1'), which the caller never defines (the VM then cannot
    compute the library call's output shape). Each parameter's symbolic dims are bound to the
    argument's dims at the call, matched as expression trees ('h_1 + 3', the input of a
    convolution after a symbolic pad, against 'h + 3')."""
    from tvm import relax

    pairs = []
    for param, arg in zip(func.params, call_args):
        have = getattr(getattr(param, "ty", None), "shape", None)
        want = getattr(getattr(arg, "ty", None), "shape", None)
        if isinstance(have, relax.ShapeExpr) and isinstance(want, relax.ShapeExpr):
            pairs += zip(have.values, want.values)
    bindings = {}
    for d, value in pairs:
        _unify(d, value, bindings)
    for d, value in pairs:
        _solve_linear(d, value, bindings)
    if not bindings:
        return func.ret_ty
    return func.bind_symbolic_vars(bindings).ret_ty


def _solve_linear(have, want, bindings: dict) -> None:
    """A dim whose tree differs from the argument's but holds one unbound variable plus a
    constant ('seq_1 - 1 + 1' against 'seq', MobileBERT's trigram concat) binds it to the
    argument's dim less that constant. Left unbound, the composite's own variable (also named
    'seq') leaked into the caller's types, and the next add with the model's `seq` lost its
    shape."""
    import tvm
    from tvm import tirx

    used = tirx.analysis.undefined_vars(have, [])
    if len(used) != 1 or used[0] in bindings or isinstance(have, tirx.Var):
        return
    var = used[0]
    analyzer = tvm.sym.Analyzer()
    offset = analyzer.simplify(have - var)
    if any(v.same_as(var) for v in tirx.analysis.undefined_vars(offset, [])):
        return
    bindings[var] = analyzer.simplify(want - offset)


def _unify(have, want, bindings: dict) -> None:
    """Bind the variables of `have` to the parts of `want` at the same place in the same
    expression tree ('(h_1 - 1) // 2 * 2 + 2' against '(h - 1) // 2 * 2 + 2': h_1 -> h)."""
    from tvm import tirx

    if isinstance(have, tirx.Var):
        bindings.setdefault(have, want)
        return
    if type(have) is not type(want):
        return
    if isinstance(have, tirx.Cast):
        _unify(have.value, want.value, bindings)
    elif hasattr(have, "a") and hasattr(have, "b"):   # Add, Sub, Mul, FloorDiv, Min, ...
        _unify(have.a, want.a, bindings)
        _unify(have.b, want.b, bindings)


def _count_ops(mod, ops: set[str]) -> Counter:
    """How many calls of each of `ops` (Relax operator names) `mod` still makes."""
    import tvm
    from tvm import relax

    found: Counter = Counter()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) \
                and str(expr.op.name) in ops:
            found[str(expr.op.name)] += 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


def _ops_in(mod) -> set[str]:
    """Names of the Relax operators called anywhere in `mod` (one linear walk). Patterns whose
    root is absent are not offered to FuseOpsByPattern, whose cost is the graph size times the
    patterns tried (a 6k-node elementwise chain: 12.7 s for nothing to offload)."""
    import tvm
    from tvm import relax

    names: set[str] = set()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            names.add(str(expr.op.name))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return names


def partition(mod, library) -> tuple[Any, DispatchReport]:
    """Offload every pattern `library` implements; returns the new module and a report."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    present = _ops_in(mod)
    wanted = [p for p in all_patterns()
              if library.implements(p) and ROOTS[p.root][0] in present]
    report = DispatchReport(library.name)
    if not wanted:
        return mod, report

    def make_check(pattern):
        def check(ctx) -> bool:
            annotated = dict(ctx.annotated_expr.items())
            return (_intermediates_private(ctx) and structural_check(pattern, annotated)
                    and library.accepts(pattern, annotated))
        return check

    fusion = [relax.transform.FusionPattern(p.name, *p.build(), check=make_check(p))
              for p in wanted]
    codegen = getattr(library, "codegen", None)
    if codegen:  # TVM BYOC: the composites are compiled into lib.so by that codegen
        mod = relax.transform.FuseOpsByPattern(fusion, annotate_codegen=True)(mod)
        report.calls[f"{codegen} regions"] = sum(
            1 for func in mod.functions.values()
            if isinstance(func, relax.Function) and func.attrs and "Codegen" in func.attrs)
        return relax.transform.RunCodegen()(mod), report

    mod = relax.transform.FuseOpsByPattern(fusion, bind_constants=False)(mod)
    table = by_name()

    @mutator
    class ToLibraryCalls(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not isinstance(call.op, tvm.ir.GlobalVar):
                return call
            func = mod[call.op]
            name = func.attrs.get("Composite") if func.attrs is not None else None
            if name is None or str(name) not in table:
                return call
            match = _match_from_composite(func, call.args, table[str(name)])
            if match.pattern.root == "matmul" and getattr(library, "transposed_operands", False):
                _absorb_transposes(self, match)
                report.transposed += len(match.transposed)
            report.calls[str(name)] += 1
            return library.emit(match)

    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function) and not (func.attrs and "Composite" in func.attrs):
            mod[gvar] = ToLibraryCalls(mod).visit_expr(func)
    mod = relax.transform.DeadCodeElimination()(mod)
    roots = {ROOTS[p.root][0]: p.root for p in wanted if p.root != "attention"}
    report.kept.update({roots[op]: n for op, n in _count_ops(mod, set(roots)).items()})
    return mod, report
