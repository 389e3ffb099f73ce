"""Optimizers with torch's update rules, compiled into the train step (`anychip.optim`).

    anychip.optim.SGD(lr, momentum=0, weight_decay=0, clip_grad_norm=None)
    anychip.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, clip_grad_norm=None)
    anychip.optim.AdamW(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, clip_grad_norm=None)

Each is a small description; `relax_optimizer()` gives the TVM `relax.training` optimizer that
SetupTrainer puts into the compiled module, and `to_torch(params)` the torch optimizer with the
same rule (the reference in parity checks).

The learning rate is the first slot of the optimizer state, a float32 scalar the trainer writes
before each update: a schedule (training/schedules.py) changes it per step without recompiling.
Every rule is linear in lr, so lr_t = lr * schedule(t) is all a schedule needs.

- clip_grad_norm: torch.nn.utils.clip_grad_norm_ on all trained parameters before the update:
  total = sqrt(sum of every gradient element squared), g *= min(1, max_norm / (total + 1e-6)).
- SGD: torch's rule (g += wd * p; v = momentum * v + g, v = g at the first step since v starts
  at 0 and dampening is 0; p -= lr * v), in torch's operation order.
- Adam / AdamW: torch's `_single_tensor_adam`. TVM's own Adam keeps beta**t as a float32
  running product; 1 - 0.999**t then loses about 1e-5 relative to cancellation (0.999 is not a
  float32), in every update. torch computes the bias corrections 1 - beta**t in float64. Here
  c = 1 - beta**t is float32 state, updated as c' = (1 - beta) + beta * c, which has no
  cancellation (about 1e-7 relative, like torch's cast of its float64 value) and needs no
  float64 on the device (ROCm's LLVM cannot select float64 pow; NPUs have no float64).
  Adam adds weight_decay * p to the gradient (L2); AdamW decays the parameter itself first,
  p *= 1 - lr * weight_decay (decoupled, Loshchilov & Hutter), as torch.optim.AdamW does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import AnychipError


def _check(name: str, what: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise AnychipError(f"anychip.optim.{name}: {what} must be {rule}, got {value!r}.")


def _check_common(name: str, lr, weight_decay, clip) -> None:
    _check(name, "lr", lr, isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0,
           "a finite number >= 0")
    _check(name, "weight_decay", weight_decay, weight_decay >= 0, ">= 0")
    if clip is not None:
        _check(name, "clip_grad_norm", clip, math.isfinite(clip) and clip > 0,
               "a finite number > 0 (or None)")


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent as torch.optim.SGD (dampening 0, no Nesterov)."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        _check_common("SGD", self.lr, self.weight_decay, self.clip_grad_norm)
        _check("SGD", "momentum", self.momentum, self.momentum >= 0, ">= 0")

    def relax_optimizer(self, fused: bool = False):   # noqa: ARG002 - no multi-output update
        return _relax_optimizer(self)

    def to_torch(self, params):
        import torch

        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    def as_dict(self) -> dict:
        return {"name": "SGD", "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "clip_grad_norm": self.clip_grad_norm}


@dataclass(frozen=True)
class Adam:
    """Adam as torch.optim.Adam (L2 weight decay added to the gradient, no amsgrad)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        name = type(self).__name__
        _check_common(name, self.lr, self.weight_decay, self.clip_grad_norm)
        _check(name, "eps", self.eps, self.eps >= 0, ">= 0")
        for i, beta in enumerate(self.betas):
            _check(name, f"betas[{i}]", beta, 0 <= beta < 1, "in [0, 1)")

    def relax_optimizer(self, fused: bool = False):
        """`fused`: each parameter's update (decay, both moments, the step) as one kernel
        (`_adam_kernel`) instead of Relax operators that fusion leaves as three kernels."""
        return _relax_optimizer(self, fused)

    def to_torch(self, params):
        import torch

        kind = torch.optim.AdamW if isinstance(self, AdamW) else torch.optim.Adam
        return kind(params, lr=self.lr, betas=self.betas, eps=self.eps,
                    weight_decay=self.weight_decay)

    def as_dict(self) -> dict:
        return {"name": type(self).__name__, "lr": self.lr, "betas": list(self.betas),
                "eps": self.eps, "weight_decay": self.weight_decay,
                "clip_grad_norm": self.clip_grad_norm}


@dataclass(frozen=True)
class AdamW(Adam):
    """AdamW as torch.optim.AdamW: decoupled weight decay (default 0.01, as torch)."""

    weight_decay: float = 0.01


OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


def from_dict(data: dict) -> SGD | Adam:
    """Inverse of `as_dict` (used by saved trainers)."""
    kind = OPTIMIZERS.get(data.get("name"))
    if kind is None:
        raise AnychipError(f"unknown optimizer '{data.get('name')}'; known: "
                           f"{', '.join(OPTIMIZERS)}.")
    fields = {k: v for k, v in data.items() if k != "name"}
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return kind(**fields)


def _relax_optimizer_class():
    """Build the Relax optimizer class lazily: tvm is imported only when a step is compiled."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.training.optimizer import Optimizer

    class TorchRuleOptimizer(Optimizer):
        """State: (lr, rule slots...). SGD: (lr, v_0..v_{n-1}) with momentum, else (lr,).
        Adam/AdamW: (lr, c1, c2, m_0..m_{n-1}, v_0..v_{n-1}), c = 1 - beta**t (0 before the
        first step); m and v start at zero as in torch."""

        def __init__(self, config, fused: bool = False) -> None:
            super().__init__(type(config).__name__)
            self.config = config
            self.fused = fused

        def _slots(self) -> int:
            if isinstance(self.config, SGD):
                return 1 if self.config.momentum else 0
            return 2

        def init(self, params):
            params = params if isinstance(params, list) else [params]
            self._set_params_and_dtype(params)
            dtype = str(self.dtype)
            zeros = [np.zeros([int(d) for d in p.ty.shape], p.ty.dtype.dtype) for p in params]
            arrays = [np.array(self.config.lr, dtype)]
            if isinstance(self.config, SGD):
                arrays += zeros if self.config.momentum else []
            else:
                arrays += [np.zeros((), dtype), np.zeros((), dtype), *zeros, *zeros]
            self.state = tuple(tvm.runtime.tensor(a) for a in arrays)
            return self

        def get_function(self) -> relax.Function:
            self._check_init()
            cfg, plist, dtype = self.config, self.param_list, str(self.dtype)
            tensors = [p.ty for p in plist]
            scalar = relax.TensorType((), dtype)
            if isinstance(cfg, SGD):
                layout = [scalar] + (tensors if cfg.momentum else [])
            else:
                layout = [scalar, scalar, scalar, *tensors, *tensors]
            params = relax.Var("params", relax.TupleType(tensors))
            grads = relax.Var("gradients", relax.TupleType(tensors))
            states = relax.Var("optim_states", relax.TupleType(layout))
            bb = relax.BlockBuilder()
            with bb.function(self.name, [params, grads, states]):
                with bb.dataflow():
                    lr = bb.emit(relax.TupleGetItem(states, 0))
                    ps = [bb.emit(relax.TupleGetItem(params, i), v.name)
                          for i, v in enumerate(plist)]
                    gs = [bb.emit(relax.TupleGetItem(grads, i)) for i in range(len(plist))]
                    if cfg.clip_grad_norm is not None:
                        gs = _clip(bb, gs, cfg.clip_grad_norm, dtype)
                    if isinstance(cfg, SGD):
                        new_params, new_slots = _sgd(bb, cfg, lr, ps, gs, states, dtype)
                    else:
                        new_params, new_slots = _adam(bb, cfg, lr, ps, gs, states, dtype,
                                                      self.fused)
                    out_params = bb.emit_output(relax.Tuple(new_params))
                    out_states = bb.emit_output(relax.Tuple([lr, *new_slots]))
                bb.emit_func_output(relax.Tuple([out_params, out_states]))
            built = bb.get()
            # the fused update's kernels: setup_trainer adds them to the step's module
            self.kernels = {gv: f for gv, f in built.functions_items() if gv.name_hint != self.name}
            return built[self.name]

    return TorchRuleOptimizer


def _clip(bb, grads, max_norm: float, dtype: str):
    """torch.nn.utils.clip_grad_norm_: one global L2 norm over every gradient."""
    from tvm import relax

    op = relax.op
    total = None
    for g in grads:
        part = op.sum(op.multiply(g, g))
        total = part if total is None else op.add(total, part)
    norm = bb.emit(op.sqrt(total))
    coef = bb.emit(op.minimum(op.divide(relax.const(max_norm, dtype),
                                        op.add(norm, relax.const(1e-6, dtype))),
                              relax.const(1.0, dtype)))
    return [bb.emit(op.multiply(g, coef)) for g in grads]


def _sgd(bb, cfg: SGD, lr, params, grads, states, dtype):
    from tvm import relax

    op = relax.op
    new_params, new_v = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        if cfg.weight_decay:
            g = bb.emit(op.add(g, op.multiply(p, relax.const(cfg.weight_decay, dtype))))
        if cfg.momentum:
            v = relax.TupleGetItem(states, 1 + i)
            g = bb.emit(op.add(op.multiply(v, relax.const(cfg.momentum, dtype)), g))
            new_v.append(g)
        new_params.append(bb.emit(op.subtract(p, op.multiply(lr, g))))
    return new_params, new_v


def _adam_kernel(cfg: Adam, dtype: str):
    """TE compute of one parameter's update with three outputs (parameter, m, v), the same
    arithmetic in the same order as `_adam`'s operators. Three kernels read and wrote ten
    tensors' worth of memory per element (m: m, g -> m; v: v, g -> v; p: p, m, v -> p), this
    one seven (p, g, m, v -> p, m, v); the update is memory-bound."""
    from tvm import te, tirx

    beta1, beta2 = cfg.betas
    decoupled = isinstance(cfg, AdamW)

    def c(value):
        return tirx.const(value, dtype)

    def kernel(p, g, m, v, lr, step_size, bc2_sqrt):
        def update(*i):
            pi, gi, mi, vi = p(*i), g(*i), m(*i), v(*i)
            if cfg.weight_decay and decoupled:
                pi = pi * (c(1.0) - lr() * c(cfg.weight_decay))
            elif cfg.weight_decay:
                gi = gi + pi * c(cfg.weight_decay)
            m1 = mi + c(1.0 - beta1) * (gi - mi)
            v1 = vi * c(beta2) + c(1.0 - beta2) * gi * gi
            denom = tirx.sqrt(v1) / bc2_sqrt() + c(cfg.eps)
            return [pi - step_size() * (m1 / denom), m1, v1]

        return te.compute(p.shape, update, name="adam_update")

    return kernel


def _adam(bb, cfg: Adam, lr, params, grads, states, dtype, fused: bool = False):
    from tvm import relax

    op = relax.op
    n = len(params)
    beta1, beta2 = cfg.betas

    def c(value):
        return relax.const(value, dtype)

    # bias corrections 1 - beta**t, updated without cancellation
    c1 = bb.emit(op.add(c(1.0 - beta1), op.multiply(c(beta1), relax.TupleGetItem(states, 1))))
    c2 = bb.emit(op.add(c(1.0 - beta2), op.multiply(c(beta2), relax.TupleGetItem(states, 2))))
    step_size = bb.emit(op.divide(lr, c1))      # lr / bias_correction1
    bc2_sqrt = bb.emit(op.sqrt(c2))
    decoupled = isinstance(cfg, AdamW)
    new_params, new_m, new_v = [], [], []
    kernel = _adam_kernel(cfg, dtype) if fused else None
    for i, (p, g) in enumerate(zip(params, grads)):
        m = relax.TupleGetItem(states, 3 + i)
        v = relax.TupleGetItem(states, 3 + n + i)
        if kernel is not None:
            m, v = bb.emit(m), bb.emit(v)
            out = bb.emit(bb.call_te(kernel, p, g, m, v, lr, step_size, bc2_sqrt,
                                     primfunc_name_hint="adam_update"))
            new_params.append(bb.emit(relax.TupleGetItem(out, 0)))
            new_m.append(bb.emit(relax.TupleGetItem(out, 1)))
            new_v.append(bb.emit(relax.TupleGetItem(out, 2)))
            continue
        if cfg.weight_decay and decoupled:
            # param.mul_(1 - lr * weight_decay)
            p = bb.emit(op.multiply(p, op.subtract(c(1.0), op.multiply(lr, c(cfg.weight_decay)))))
        elif cfg.weight_decay:
            g = bb.emit(op.add(g, op.multiply(p, c(cfg.weight_decay))))
        # exp_avg.lerp_(grad, 1 - beta1): m + w * (g - m) for w < 0.5
        m = bb.emit(op.add(m, op.multiply(c(1.0 - beta1), op.subtract(g, m))))
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        v = bb.emit(op.add(op.multiply(v, c(beta2)), op.multiply(op.multiply(c(1.0 - beta2), g), g)))
        # denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
        denom = op.add(op.divide(op.sqrt(v), bc2_sqrt), c(cfg.eps))
        # param.addcdiv_(exp_avg, denom, value=-step_size)
        new_params.append(bb.emit(op.subtract(p, op.multiply(step_size, op.divide(m, denom)))))
        new_m.append(m)
        new_v.append(v)
    return new_params, [c1, c2, *new_m, *new_v]


def _relax_optimizer(config, fused: bool = False):
    return _relax_optimizer_class()(config, fused)
