"""float32 exp, erf, sigmoid and tanh as vectorizable polynomials (backends/host/fast_math.py): the rewrite
happens, the kernels are within a few ulp of float64 exp/erf over the whole float32 range with
IEEE special values kept, float64 is left alone, and a GELU network's train step (where it is
on by default) follows torch eager."""

from __future__ import annotations

import copy
import math

import anychip
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from anychip.backends.host.fast_math import polynomial_exp_erf

SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 88.72, 88.73,
                     -87.4, -103.9, -104.0, 3.4e38, -3.4e38, 4.0, -4.0, 1e-30],
                    np.float32)


def _exp_erf_model() -> onnx.ModelProto:
    n = 1 << 18
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Exp", ["x"], ["exp"]), helper.make_node("Erf", ["x"], ["erf"]),
         helper.make_node("Sigmoid", ["x"], ["sigmoid"]),
         helper.make_node("Tanh", ["x"], ["tanh"])],
        "exp_erf", [helper.make_tensor_value_info("x", f, [n])],
        [helper.make_tensor_value_info("exp", f, [n]),
         helper.make_tensor_value_info("erf", f, [n]),
         helper.make_tensor_value_info("sigmoid", f, [n]),
         helper.make_tensor_value_info("tanh", f, [n])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of float32's spacing at the exact value (normal results)."""
    return np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)


def test_exp_erf_polynomials_are_within_ulps_of_float64():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-110, 90, 210_000), rng.normal(0, 3, 60_000)])
    x = np.concatenate([x[:(1 << 18) - SPECIALS.size], SPECIALS]).astype(np.float32)
    art = anychip.compile(_exp_erf_model(), target="cpu", fast_math=True)
    assert art.report["fast_math"] == 4
    got = art.run({"x": x})
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        exp = np.exp(x64).astype(np.float32).astype(np.float64)   # inf beyond float32's range
    erf = np.array([math.erf(v) for v in x64])
    normal = np.isfinite(exp) & (exp >= np.finfo(np.float32).tiny)
    assert _ulps(got["exp"][normal], np.exp(x64[normal])).max() <= 1.5
    # denormal results: within one spacing of the smallest normal float32's (absolute)
    assert np.abs(got["exp"][~normal & np.isfinite(exp)] - exp[~normal & np.isfinite(exp)]).max() \
        <= np.finfo(np.float32).smallest_subnormal * 2
    assert np.abs(got["erf"] - erf)[~np.isnan(x)].max() <= 4e-7
    assert _ulps(got["erf"][np.abs(erf) > 1e-30], erf[np.abs(erf) > 1e-30]).max() <= 8
    # IEEE special values as libm: NaN stays NaN, exp(+-inf) = inf / 0, erf(+-inf) = +-1,
    # exp overflows to inf past float32's range, erf keeps the sign of zero
    tail = slice(-SPECIALS.size, None)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(got["exp"][tail], np.exp(SPECIALS.astype(np.float64))
                                   .astype(np.float32), rtol=2.4e-7, atol=3e-45)
    want_erf = np.array([math.erf(v) if not math.isnan(v) else math.nan for v in SPECIALS],
                        np.float32)
    np.testing.assert_allclose(got["erf"][tail], want_erf, rtol=0, atol=4e-7)
    assert np.signbit(got["erf"][tail][4]) and not np.signbit(got["erf"][tail][3])
    # sigmoid = 1 / (1 + exp(-x)): within 3 ulp where it is a normal float32, 0 / 1 at -inf /
    # +inf, NaN kept
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-x64))
    finite = ~np.isnan(x) & (sig >= np.finfo(np.float32).tiny)
    assert _ulps(got["sigmoid"][finite], sig[finite]).max() <= 3
    assert np.isnan(got["sigmoid"][tail][0])
    assert got["sigmoid"][tail][1] == 1.0 and got["sigmoid"][tail][2] == 0.0
    # tanh: within 7 ulp where it is a normal float32, +-1 at +-inf, NaN and -0 kept
    th = np.tanh(x64)
    normal = ~np.isnan(x) & (np.abs(th) >= np.finfo(np.float32).tiny)
    assert _ulps(got["tanh"][normal], th[normal]).max() <= 7
    assert np.isnan(got["tanh"][tail][0])
    assert got["tanh"][tail][1] == 1.0 and got["tanh"][tail][2] == -1.0
    assert np.signbit(got["tanh"][tail][4]) and not np.signbit(got["tanh"][tail][3])


def test_only_float32_calls_are_rewritten():
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x32 = relax.Var("x32", relax.TensorType([4], "float32"))
    x64 = relax.Var("x64", relax.TensorType([4], "float64"))
    with bb.function("main", [x32, x64]):
        with bb.dataflow():
            a = bb.emit(relax.op.exp(x32))
            b = bb.emit(relax.op.erf(a))
            c = bb.emit(relax.op.exp(x64))
            out = bb.emit_output(relax.Tuple([b, c]))
        bb.emit_func_output(out)
    mod, count = polynomial_exp_erf(bb.get())
    assert count == 2
    ops = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: ops.append(e.op.name) if isinstance(e, relax.Call)
        and isinstance(e.op, tvm.ir.Op) else None)
    assert ops.count("relax.exp") == 1 and "relax.erf" not in ops   # the float64 exp stays
    assert ops.count("relax.call_tir") == 2


def _activations_model() -> onnx.ModelProto:
    """Gelu (exact and tanh), a softmax over an odd width and over a middle axis, SiLU."""
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Gelu", ["x"], ["gelu"]),
             helper.make_node("Gelu", ["x"], ["gelu_tanh"], approximate="tanh"),
             helper.make_node("Softmax", ["x"], ["softmax_last"], axis=-1),
             helper.make_node("Softmax", ["x"], ["softmax_mid"], axis=1),
             helper.make_node("Sigmoid", ["x"], ["sig"]),
             helper.make_node("Mul", ["x", "sig"], ["silu"])]
    outs = ["gelu", "gelu_tanh", "softmax_last", "softmax_mid", "silu"]
    graph = helper.make_graph(nodes, "activations",
                              [helper.make_tensor_value_info("x", f, [2, 6, 197])],
                              [helper.make_tensor_value_info(o, f, [2, 6, 197]) for o in outs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_gelu_and_softmax_polynomials_match_float64():
    """TVM's own kernels (dispatch off) compute Gelu, its tanh form, softmax and SiLU with
    the polynomials, close to float64; extreme inputs saturate without NaN."""
    erf = np.vectorize(math.erf)
    x = np.random.default_rng(0).standard_normal((2, 6, 197)).astype(np.float32) * 4
    x[0, 0, :len(SPECIALS) - 1] = np.nan_to_num(SPECIALS[1:], posinf=3e38, neginf=-3e38)
    art = anychip.compile(_activations_model(), target="cpu", dispatch=False)
    assert art.report["fast_math"] >= 4   # gelu, gelu_tanh, 2 softmax (+ sigmoid)
    got = art.run({"x": x})
    d = x.astype(np.float64)

    def softmax(a, axis):
        e = np.exp(a - a.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    y = np.sqrt(2 / np.pi) * (d + 0.044715 * d ** 3)
    with np.errstate(over="ignore", invalid="ignore"):
        exact = {"gelu": d * 0.5 * (1 + erf(d / np.sqrt(2))),
                 "gelu_tanh": d * 0.5 * (1 + np.tanh(y)),
                 "softmax_last": softmax(d, -1), "softmax_mid": softmax(d, 1),
                 "silu": d / (1 + np.exp(-d))}
    for name, want in exact.items():
        have = np.asarray(got[name], np.float64)
        ok = np.isfinite(want)
        assert not np.isnan(have[ok]).any(), name
        np.testing.assert_allclose(have[ok], want[ok], rtol=2e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("width", [20, 197])
def test_softmax_rows_rounded_up_to_whole_vectors_keep_ieee_results(width):
    """A row length no vector divides is reduced over its length rounded up (the padding
    -inf): ordinary rows match float64, and rows of -inf, with +inf or with NaN give NaN
    exactly where numpy's softmax does; the max and sum are vectorized (rfactored)."""
    import tvm
    from tvm import relax

    from anychip.backends.cpu.backend import host_cpu_name
    from anychip.backends.host import schedule

    from .kernels import relax_module

    f = TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "softmax",
                              [helper.make_tensor_value_info("x", f, [5, width])],
                              [helper.make_tensor_value_info("y", f, [5, width])])
    x = np.random.default_rng(width).standard_normal((5, width)).astype(np.float32) * 5
    x[1, :] = -np.inf
    x[2, 3] = np.inf
    x[3, width - 1] = np.nan
    x[4, :] = np.linspace(-120, 90, width)   # exp's underflow and near-overflow
    art = anychip.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]),
                          target="cpu", dispatch=False)
    have = np.asarray(art.run({"x": x})["y"], np.float64)
    d = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(d - d.max(axis=-1, keepdims=True))
        want = e / e.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(have, want, rtol=2e-5, atol=1e-7, equal_nan=True)
    assert np.isnan(have[1:4]).all() and not np.isnan(have[[0, 4]]).any()

    # the kernel the cpu pipeline schedules: both reductions split into vector lanes
    mod, _ = polynomial_exp_erf(relax_module(
        lambda bb, xv: bb.emit(relax.op.nn.softmax(xv)), (5, width)))
    kernel = next(f for f in mod.functions.values() if not isinstance(f, relax.Function))
    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name(), "num-cores": 2})
    with target:
        sch = schedule._row_kernel(kernel, target, True)
    text = sch.mod.script()
    assert 'sblock("softmax_max_rf' in text and 'sblock("softmax_sum_rf' in text, text


class _GeluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 64), nn.Linear(64, 5)
        self.norm = nn.LayerNorm(64)

    def forward(self, x):
        return self.fc2(self.norm(nn.functional.gelu(self.fc1(x))))


@pytest.mark.slow
def test_gelu_train_step_uses_polynomials_and_follows_torch():
    torch.manual_seed(0)
    model = _GeluNet()
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(32, 16, generator=gen), torch.randint(0, 5, (32,), generator=gen))
    data = [batch] * 12
    optimizer = anychip.optim.AdamW(lr=1e-2, weight_decay=0.01)
    ref = copy.deepcopy(model)
    opt = optimizer.to_torch(list(ref.parameters()))
    ref_losses = []
    for x, y in data:
        loss = nn.functional.cross_entropy(ref(x), y)
        ref_losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       optimizer=optimizer, target="cpu")
    # GELU's erf (forward), its gradient's exp, the loss's log-softmax exp
    assert trainer.report["backend_report"]["fast_math"] >= 2
    losses = np.array([trainer.step(x.numpy(), y.numpy()) for x, y in data])
    assert np.max(np.abs(losses - ref_losses)) <= 1e-5, (losses, ref_losses)
    assert losses[-1] < losses[0]
