"""Every gradient anychip registers (compiler/training/gradients.py), checked two ways: against
torch autograd on the same function, and against a central finite difference of the compiled
forward function along a random direction. float64, so both checks are tight, except for
layer_norm and rms_norm, whose forward TVM lowers only in float32/float16: those run in float32
with a larger difference step and tolerances to match.

All cases are built into one Relax module (one LLVM build for the whole file): case NAME has
NAME(inputs...) = sum(op(inputs) * r) and NAME_adjoint from relax.transform.Gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.slow   # one LLVM build of ~40 functions: 20-40 s on two loaded cores

RNG = np.random.default_rng(22)


def _normal(*shape):
    return RNG.standard_normal(shape)


@dataclass
class Case:
    name: str
    inputs: list                      # float64 arrays (differentiable) or int64 (indices)
    relax_fn: Callable                # relax vars -> relax expr
    torch_fn: Callable                # torch tensors -> torch tensor
    dtype: str = "float64"

    def __post_init__(self):
        self.inputs = [a.astype(self.dtype) if a.dtype.kind == "f" else a for a in self.inputs]


def _cases() -> list[Case]:
    from tvm import relax

    op, nn = relax.op, relax.op.nn
    ids = np.array([[1, 3, 3], [0, 1, 4]], dtype=np.int64)
    return [
        Case("squeeze", [_normal(2, 1, 3)], lambda x: op.squeeze(x, [1]),
             lambda x: x.squeeze(1)),
        Case("strided_slice", [_normal(4, 6)],
             lambda x: op.strided_slice(x, [1], [1], [5]), lambda x: x[:, 1:5]),
        Case("strided_slice_steps", [_normal(5, 7)],
             lambda x: op.strided_slice(x, [0, 1], [1, 0], [5, 7], [2, 3]),
             lambda x: x[1:5:2, 0:7:3]),
        Case("strided_slice_negative_begin", [_normal(6, 2)],
             lambda x: op.strided_slice(x, [0], [-3], [100]), lambda x: x[-3:]),
        Case("erf", [_normal(3, 4)], op.erf, torch.erf),
        Case("gelu", [_normal(3, 4)], nn.gelu, F.gelu),
        Case("gelu_tanh", [_normal(3, 4)], nn.gelu_tanh,
             lambda x: F.gelu(x, approximate="tanh")),
        Case("layer_norm", [_normal(2, 3, 4), _normal(4), _normal(4)],
             lambda x, g, b: nn.layer_norm(x, g, b, [-1], 1e-5),
             lambda x, g, b: F.layer_norm(x, (4,), g, b, 1e-5), "float32"),
        Case("layer_norm_two_axes", [_normal(2, 3, 4), _normal(3, 4), _normal(3, 4)],
             lambda x, g, b: nn.layer_norm(x, g, b, [1, 2], 1e-5),
             lambda x, g, b: F.layer_norm(x, (3, 4), g, b, 1e-5), "float32"),
        Case("rms_norm", [_normal(2, 3, 4), _normal(4)],
             lambda x, w: nn.rms_norm(x, w, [-1], 1e-6),
             lambda x, w: F.rms_norm(x, (4,), w, 1e-6), "float32"),
        Case("rsqrt", [np.abs(_normal(3, 4)) + 0.5], op.rsqrt, torch.rsqrt),
        Case("square", [_normal(3, 4)], op.square, torch.square),
        Case("clip", [_normal(4, 5)],
             lambda x: op.clip(x, -0.5, 0.5),
             lambda x: torch.clamp(x, -0.5, 0.5)),
        Case("leakyrelu", [_normal(3, 4)], lambda x: nn.leakyrelu(x, 0.1),
             lambda x: F.leaky_relu(x, 0.1)),
        Case("pad", [_normal(2, 3)], lambda x: nn.pad(x, [0, 0, 1, 2]),
             lambda x: F.pad(x, (1, 2))),
        Case("flip", [_normal(3, 4)], lambda x: op.flip(x, 1), lambda x: x.flip(1)),
        Case("tril", [_normal(4, 4)], lambda x: op.tril(x, 0), torch.tril),
        Case("take_2d_ids_repeated", [_normal(5, 3), ids],
             lambda w, i: op.take(w, i, axis=0), lambda w, i: w[i]),
        Case("take_scalar_index", [_normal(3, 2, 4), np.array(1, dtype=np.int64)],
             lambda x, i: op.take(x, i, axis=0), lambda x, i: x[1]),
    ]


def _float(a) -> bool:
    return a.dtype.kind == "f"


@pytest.fixture(scope="module")
def compiled():
    """All cases in one module, legalized and built once for the host."""
    import tvm
    from anychip.compiler.training.gradients import register
    from tvm import relax

    register()
    cases = {c.name: c for c in _cases()}
    mod = tvm.IRModule()
    weights = {}
    for case in cases.values():
        params = [relax.Var(f"a{i}", relax.TensorType(a.shape, str(a.dtype)))
                  for i, a in enumerate(case.inputs)]
        bb = relax.BlockBuilder()
        with bb.function(case.name, params):
            with bb.dataflow():
                y = bb.emit(case.relax_fn(*params))
                r = _normal(*[int(d) for d in y.ty.shape]).astype(case.dtype)
                weights[case.name] = r
                out = bb.emit_output(relax.op.sum(relax.op.multiply(y, relax.const(r, case.dtype))))
            bb.emit_func_output(out)
        func = bb.get()[case.name]
        mod[case.name] = func
        wanted = [p for p, a in zip(func.params, case.inputs) if _float(a)]
        mod = relax.transform.Gradient(case.name, require_grads=wanted)(mod)
    mod = relax.transform.LegalizeOps()(mod)
    executable = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return cases, weights, vm


CASE_NAMES = [c.name for c in _cases()]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_gradient_matches_torch_and_finite_differences(compiled, name):
    import tvm

    cases, weights, vm = compiled
    case = cases[name]

    def run(fn, arrays):
        return vm[fn](*[tvm.runtime.tensor(a) for a in arrays])

    loss, grads = run(f"{name}_adjoint", case.inputs)
    grads = [g.numpy() for g in grads]
    # torch autograd on the same function
    tensors = [torch.tensor(a, requires_grad=_float(a)) for a in case.inputs]
    ref_loss = (case.torch_fn(*tensors) * torch.tensor(weights[name])).sum()
    ref_loss.backward()
    exact = case.dtype == "float64"
    rtol, atol = (1e-9, 1e-11) if exact else (1e-5, 1e-6)
    np.testing.assert_allclose(loss.numpy(), ref_loss.item(), rtol=rtol, atol=atol)
    ref_grads = [t.grad.numpy() for t, a in zip(tensors, case.inputs) if _float(a)]
    assert len(grads) == len(ref_grads)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    # central difference of the compiled forward along a random direction, per input
    h = 1e-6 if exact else 1e-3
    floats = [i for i, a in enumerate(case.inputs) if _float(a)]
    for got, i in zip(grads, floats):
        direction = _normal(*case.inputs[i].shape).astype(case.dtype)
        plus, minus = list(case.inputs), list(case.inputs)
        plus[i] = case.inputs[i] + h * direction
        minus[i] = case.inputs[i] - h * direction
        numeric = (float(run(name, plus).numpy()) - float(run(name, minus).numpy())) / (2 * h)
        np.testing.assert_allclose(float(np.sum(got * direction)), numeric,
                                   rtol=1e-6 if exact else 3e-3, atol=1e-7 if exact else 1e-3)
