"""Kernels as the cpu pipeline hands them to the schedule rules: a Relax function built
by `build(bb, *vars)`, legalized and fused into one PrimFunc (epilogue included)."""

from __future__ import annotations


def relax_module(build, *shapes):
    """A module whose Relax main is `build(bb, *inputs)` (float32 inputs of `shapes`)."""
    from tvm import relax
    from tvm.script import relax as R

    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", R.Tensor(s, "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", xs):
        with bb.dataflow():
            out = bb.emit_output(build(bb, *xs))
        bb.emit_func_output(out)
    return bb.get()


def fused_kernel(build, *shapes):
    """The one PrimFunc FuseOps/FuseTIR make of `build(bb, *inputs)` (float32 inputs of
    `shapes`), named main."""
    import tvm
    from tvm import relax

    seq = tvm.transform.Sequential([relax.transform.LegalizeOps(),
                                    relax.transform.AnnotateTIROpPattern(),
                                    relax.transform.FoldConstant(), relax.transform.FuseOps(),
                                    relax.transform.FuseTIR()])
    module = seq(relax_module(build, *shapes))
    funcs = [f for f in module.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(funcs) == 1
    return funcs[0].with_attr("global_symbol", "main")
