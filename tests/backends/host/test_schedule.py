"""The host's default schedules on kernels with symbolic extents (a dynamic batch or sequence):
they must still be parallel and vectorized, and compute the same values as numpy."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax, tirx  # noqa: E402
from tvm.script import ir as I  # noqa: E402
from tvm.script import relax as R  # noqa: E402
from tvm.script import tirx as T  # noqa: E402

from anychip.backends.host.schedule import schedule_rules  # noqa: E402

TARGET = {"kind": "llvm"}   # generic x86-64: 4 float lanes, runs on any host


@I.ir_module
class BiasGelu:
    @R.function
    def main(x: R.Tensor(("batch", "seq", 64), "float32"), b: R.Tensor((64,), "float32")):
        with R.dataflow():
            y = R.nn.gelu(R.add(x, b))
            R.output(y)
        return y


def _scheduled() -> tvm.IRModule:
    from tvm.s_tir import dlight

    target = tvm.target.Target(TARGET)
    mod = relax.transform.LegalizeOps()(BiasGelu)
    mod = relax.transform.AnnotateTIROpPattern()(mod)
    mod = relax.transform.FuseOps()(mod)
    mod = relax.transform.FuseTIR()(mod)
    with target:
        return dlight.ApplyDefaultSchedule(*schedule_rules(parallel=True))(mod)


def test_a_symbolic_elementwise_kernel_is_parallel_over_rows_and_vectorized_along_hidden():
    mod = _scheduled()
    kernels = [f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)]
    assert kernels
    for func in kernels:
        text = func.script()
        assert "T.parallel(" in text and "T.vectorized(" in text, text


@pytest.mark.parametrize("batch,seq", [(1, 1), (3, 7), (2, 64)])
def test_the_scheduled_kernel_computes_what_numpy_does_at_every_size(batch, seq):
    exe = tvm.compile(_scheduled(), target=tvm.target.Target(TARGET))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    rng = np.random.default_rng(batch * 100 + seq)
    x = rng.standard_normal((batch, seq, 64)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(b)).numpy()
    z = (x + b).astype(np.float64)
    from math import erf
    want = 0.5 * z * (1 + np.vectorize(erf)(z / np.sqrt(2)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)



def _rotary_backward():
    """The tiny Llama train step's rotary-embedding gradient for q (heads of 8 joined into a
    hidden axis of 16), as TVM fused it: the hidden index v is read as v // 8 and v % 8."""
    from tvm import te

    g = te.placeholder((2, 2, 6, 8), "float32", name="g")
    cos = te.placeholder((6, 8), "float32", name="cos")
    sin = te.placeholder((6, 8), "float32", name="sin")

    def grad(b, s, v):
        h, d = v // 8, v % 8
        low = tirx.if_then_else(d < 4, g[b, h, s, d + 4] * sin[s, d + 4], tirx.const(0.0))
        high = tirx.if_then_else(d >= 4, -g[b, h, s, d - 4] * sin[s, d - 4], tirx.const(0.0))
        return g[b, h, s, d] * cos[s, d] + low + high

    out = te.compute((2, 6, 16), grad, name="grad")
    return te.create_prim_func([g, cos, sin, out])


def _vectorized_extents(func) -> list[int]:
    found = []

    def visit(node):
        if isinstance(node, tirx.For) and node.kind == tirx.ForKind.VECTORIZED:
            found.append(int(node.extent))

    _walk_for(func.body, visit)
    return found


def _walk_for(stmt, visit):
    stack = [stmt]
    while stack:
        node = stack.pop()
        visit(node)
        for field in ("body", "seq", "then_case", "else_case", "block"):
            child = getattr(node, field, None)
            if child is None:
                continue
            stack.extend(child if isinstance(child, (list, tuple)) or
                         type(child).__name__ == "Array" else [child])


def test_vector_lanes_never_straddle_an_index_wrap():
    """AVX-512 gives 16 float lanes; a 16-lane vector over `v % 8` straddles a wrap of the
    index, and LLVM's znver4 code for such a kernel read garbage (the Llama train step left
    torch's curve at step 6 on AMD Zen 4 only). The lanes are cut to divide every divisor (8
    here), and the kernel built for this host computes what numpy does."""
    from anychip.backends.host.schedule import _injective

    wide = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v4"})   # scheduled, not run
    sch = _injective(_rotary_backward(), wide, False)
    assert _vectorized_extents(sch.mod["main"]) == [8]

    host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.get_global_func(
        "tvm.codegen.llvm.GetHostCPUName")()})
    lib = tvm.compile(_injective(_rotary_backward(), host, False).mod, target=host)
    rng = np.random.default_rng(0)
    g, c, s = (rng.standard_normal(shape).astype(np.float32)
               for shape in [(2, 2, 6, 8), (6, 8), (6, 8)])
    out = tvm.runtime.tensor(np.zeros((2, 6, 16), np.float32))
    lib(*(tvm.runtime.tensor(a) for a in (g, c, s)), out)
    rotated = np.concatenate([g[..., 4:] * s[:, 4:], -g[..., :4] * s[:, :4]], axis=-1)
    want = (g * c + rotated).transpose(0, 2, 1, 3).reshape(2, 6, 16)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 3])
def test_softmax_of_one_row_keeps_one_pass_per_block(rows):
    """dlight's Reduction recomputed a one-row softmax's max and sum under every column
    (O(n^2), 7.5 ms for 1000 classes); SingleRow keeps each block's own loop nest. Values
    as numpy's for one row and for several (which dlight's rule keeps)."""
    from tvm.s_tir import dlight

    @I.ir_module
    class Softmax:
        @R.function
        def main(x: R.Tensor((rows, 1000), "float32")):
            with R.dataflow():
                y = R.nn.softmax(x, axis=-1)
                R.output(y)
            return y

    target = tvm.target.Target(TARGET)
    mod = relax.transform.LegalizeOps()(Softmax)
    mod = relax.transform.AnnotateTIROpPattern()(mod)
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(mod))
    with target:
        mod = dlight.ApplyDefaultSchedule(*schedule_rules(parallel=True))(mod)
    kernel = next(f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc))
    def nest(node) -> int:   # the most iterations of any loop nest: one row's, not squared
        parts = [getattr(node, f, None) for f in ("block", "body", "init")]
        parts += list(getattr(node, "seq", []))
        inner = max((nest(p) for p in parts if p is not None), default=1)
        return inner * int(node.extent) if isinstance(node, tirx.For) else inner

    assert nest(kernel.body) <= rows * 1024   # a row, padded to whole vectors
    x = np.random.default_rng(0).standard_normal((rows, 1000)).astype(np.float32) * 4
    vm = relax.VirtualMachine(relax.build(mod, target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


def _layer_norm(bb, x):
    width = int(x.ty.shape[-1])
    gamma = relax.const(np.linspace(0.5, 1.5, width, dtype=np.float32))
    beta = relax.const(np.linspace(-0.2, 0.2, width, dtype=np.float32))
    return bb.emit(relax.op.nn.layer_norm(x, gamma, beta, axes=[-1]))


def _softmax(bb, x):
    return bb.emit(relax.op.nn.softmax(x, axis=-1))


@pytest.mark.parametrize("shape", [(2, 5, 64), (3, 37), (2, 7, 197)])
@pytest.mark.parametrize("build", [_layer_norm, _softmax], ids=["layer_norm", "softmax"])
def test_row_kernels_sum_in_vector_partials_and_match_the_loop_nest(build, shape):
    """RowKernel: layer norm and softmax rows computed under one parallel row loop; a width
    the vectors divide sums in one partial per lane (an rfactor block), an odd one (ViT's
    197) is left to LLVM's loop vectorizer. Values as TVM's unscheduled nest's."""
    from anychip.backends.host.lanes import vector_lanes
    from anychip.backends.host.schedule import _row_kernel

    from .kernels import fused_kernel

    func = fused_kernel(build, shape)
    target = tvm.target.Target(TARGET)
    with target:
        sch = _row_kernel(func, target, True)
    assert sch is not None
    assert ("_rf" in sch.mod.script()) == (shape[-1] % vector_lanes(target) == 0)
    fast = tvm.compile(sch.mod, target=target)
    plain = tvm.compile(tvm.IRModule({"main": func}), target=target)
    rng = np.random.default_rng(5)
    args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape])
                               .astype(np.float32) * 3) for p in func.params[:-1]]
    outs = [tvm.runtime.tensor(np.full(shape, np.nan, np.float32)) for _ in range(2)]
    fast["main"](*args, outs[0])
    plain["main"](*args, outs[1])
    np.testing.assert_allclose(outs[0].numpy(), outs[1].numpy(), rtol=2e-5, atol=2e-6)


@I.ir_module
class DynamicReshape:
    @R.function
    def main(x: R.Tensor(("a", "b", "c", "d", "e"), "float32"),
             s: R.Shape(["p", "q", "r", "t"])):
        p, q, r, t = T.int64(), T.int64(), T.int64(), T.int64()
        with R.dataflow():
            y = R.reshape(R.add(x, x), R.shape([p, q, r, t]))
            R.output(y)
        return y


@I.ir_module
class StaticReshape:
    @R.function
    def main(x: R.Tensor((2, 3, 4), "float32")):
        with R.dataflow():
            y = R.reshape(R.add(x, x), (6, 4))
            R.output(y)
        return y


def _legalized_ops(mod) -> set[str]:
    from anychip.backends.host.schedule import legalize_passes

    target = tvm.target.Target(TARGET)
    with target:
        mod = tvm.transform.Sequential(legalize_passes(target))(mod)
    found = set()
    relax.analysis.post_order_visit(mod["main"], lambda e: found.add(str(e.op.name)) if isinstance(
        e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    return found


def test_a_reshape_with_dims_known_at_run_time_stays_a_view():
    """TOPI's reshape kernel over dims known only at run time (a shape the model computes)
    took LLVM 45 s and then all of this machine's memory (an ONNX Attention with grouped KV
    heads and symbolic dims): it stays relax.reshape, which the VM performs as a view."""
    assert "relax.reshape" in _legalized_ops(DynamicReshape)


def test_a_static_reshape_is_still_a_kernel_fused_with_its_neighbours():
    assert "relax.reshape" not in _legalized_ops(StaticReshape)


def test_the_dynamic_reshape_view_computes_the_reshape():
    from anychip.backends.host.schedule import pipeline

    target = tvm.target.Target(TARGET)
    ex = relax.build(DynamicReshape, target, relax_pipeline=pipeline(target, parallel=True))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.arange(2 * 3 * 4 * 5 * 6, dtype=np.float32).reshape(2, 3, 4, 5, 6)
    out = vm["main"](tvm.runtime.tensor(x), tvm.runtime.ShapeTuple([6, 4, 5, 6]))
    np.testing.assert_array_equal(out.numpy(), (x + x).reshape(6, 4, 5, 6))
