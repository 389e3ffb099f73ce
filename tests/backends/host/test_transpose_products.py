"""transpose_matmul_products (backends/host/relax_passes.py): a weight gradient summed over batch
axes becomes one GEMM whose transposed product comes out in the weight's own layout, with the
same numbers; products used twice are left alone."""

from __future__ import annotations

import numpy as np


def _ops(mod) -> list[str]:
    import tvm
    from tvm import relax

    found = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            found.append(str(expr.op.name))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def _weight_gradient(reuse: bool):
    """dW for y = x @ W^T as TVM's Gradient writes it: (collapse_sum(x^T @ g))^T."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3, 4), "float32"))
    g = relax.Var("g", relax.TensorType((2, 3, 5), "float32"))
    with bb.function("main", [x, g]):
        with bb.dataflow():
            xt = bb.emit(relax.op.permute_dims(x, [0, 2, 1]))
            prod = bb.emit(relax.op.matmul(xt, g))
            summed = bb.emit(relax.op.collapse_sum_to(prod, (4, 5)))
            dw = bb.emit(relax.op.permute_dims(summed, [1, 0]))
            out = bb.emit_output(relax.Tuple([dw, prod]) if reuse else dw)
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, *arrays):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(relax.build(mod, "llvm"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in arrays])
    return out.numpy()


def test_summed_weight_gradient_becomes_one_gemm_in_the_weights_layout():
    from anychip.backends.host.relax_passes import transpose_matmul_products

    mod = _weight_gradient(reuse=False)
    rewritten = transpose_matmul_products(mod)
    ops = _ops(rewritten)
    assert "relax.collapse_sum_to" not in ops
    # one matmul of [5, 6] (g^T, left for the library as a view) by [6, 4]: x reshaped
    assert ops.count("relax.matmul") == 1 and ops.count("relax.permute_dims") == 1


def test_the_rewritten_weight_gradient_has_the_same_numbers():
    from anychip.backends.host.relax_passes import transpose_matmul_products

    mod = _weight_gradient(reuse=False)
    rewritten = transpose_matmul_products(mod)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    g = rng.standard_normal((2, 3, 5)).astype(np.float32)
    want = np.einsum("btk,btn->nk", x, g)
    np.testing.assert_allclose(_run(rewritten, x, g), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_run(mod, x, g), want, rtol=1e-5, atol=1e-5)


def test_a_product_used_elsewhere_is_not_rewritten():
    from anychip.backends.host.relax_passes import transpose_matmul_products

    ops = _ops(transpose_matmul_products(_weight_gradient(reuse=True)))
    assert "relax.collapse_sum_to" in ops and ops.count("relax.matmul") == 1
