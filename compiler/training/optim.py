"""Optimizers with torch's update rules, compiled into the train step (`anychip.optim`).

    anychip.optim.SGD(lr, momentum=0, weight_decay=0)
    anychip.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)

Each is a small description; `relax_optimizer()` gives the TVM `relax.training` optimizer that
SetupTrainer puts into the compiled module, and `to_torch(params)` the torch optimizer with the
same rule (the reference in parity checks).

Which Relax function implements which rule, and why:
- SGD: TVM's `relax.optimizer.SGD` / `MomentumSGD` compute exactly torch's update
  (g += wd*p; v = momentum*v + g, with v = g at the first step since v starts at 0 and
  dampening is 0; p -= lr*v), in torch's operation order. They are used as they are.
- Adam: TVM's `relax.optimizer.Adam` is the same rule but keeps beta**t as a float32 running
  product; 1 - 0.999**t then loses about 1e-5 relative to cancellation (0.999 is not a float32),
  in every update. torch computes the bias corrections 1 - beta**t in float64. `_TorchAdam`
  keeps c = 1 - beta**t itself as float32 state, updated as c' = (1 - beta) + beta * c, which
  has no cancellation (about 1e-7 relative, like torch's cast of its float64 value) and needs
  no float64 on the device (ROCm's LLVM cannot select float64 pow; NPUs have no float64). The
  update follows torch's single-tensor Adam operation by operation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AnychipError


def _check(name: str, what: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise AnychipError(f"anychip.optim.{name}: {what} must be {rule}, got {value!r}.")


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent as torch.optim.SGD (dampening 0, no Nesterov)."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check("SGD", "lr", self.lr, self.lr >= 0, ">= 0")
        _check("SGD", "momentum", self.momentum, self.momentum >= 0, ">= 0")
        _check("SGD", "weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0")

    def relax_optimizer(self):
        from tvm.relax.training import optimizer

        if self.momentum:
            return optimizer.MomentumSGD(self.lr, self.momentum, dampening=0.0,
                                         weight_decay=self.weight_decay, nesterov=False)
        return optimizer.SGD(self.lr, weight_decay=self.weight_decay)

    def to_torch(self, params):
        import torch

        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    def as_dict(self) -> dict:
        return {"name": "SGD", "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay}


@dataclass(frozen=True)
class Adam:
    """Adam as torch.optim.Adam (L2 weight decay added to the gradient, no amsgrad)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _check("Adam", "lr", self.lr, self.lr >= 0, ">= 0")
        _check("Adam", "eps", self.eps, self.eps >= 0, ">= 0")
        for i, beta in enumerate(self.betas):
            _check("Adam", f"betas[{i}]", beta, 0 <= beta < 1, "in [0, 1)")
        _check("Adam", "weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0")

    def relax_optimizer(self):
        return _TorchAdam(self)

    def to_torch(self, params):
        import torch

        return torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps,
                                weight_decay=self.weight_decay)

    def as_dict(self) -> dict:
        return {"name": "Adam", "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}


def from_dict(data: dict) -> SGD | Adam:
    """Inverse of `as_dict` (used by saved trainers)."""
    kind = {"SGD": SGD, "Adam": Adam}.get(data.get("name"))
    if kind is None:
        raise AnychipError(f"unknown optimizer '{data.get('name')}'; known: SGD, Adam.")
    fields = {k: v for k, v in data.items() if k != "name"}
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return kind(**fields)


def _torch_adam_class():
    """Build the Relax Adam class lazily: tvm is imported only when a step is compiled."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.training.optimizer import Optimizer

    class TorchAdam(Optimizer):
        """Relax Adam following torch's `_single_tensor_adam`.

        State: (c1, c2, m_0..m_{n-1}, v_0..v_{n-1}) with c = 1 - beta**t (0 before the first
        step); m and v start at zero as in torch.
        """

        def __init__(self, config: Adam) -> None:
            super().__init__("Adam")
            self.config = config

        def init(self, params):
            params = params if isinstance(params, list) else [params]
            self._set_params_and_dtype(params)
            dtype = str(self.dtype)
            zeros = [np.zeros([int(d) for d in p.ty.shape], p.ty.dtype.dtype) for p in params]
            self.state = tuple(tvm.runtime.tensor(a) for a in
                               [np.zeros((), dtype), np.zeros((), dtype), *zeros, *zeros])
            return self

        def get_function(self) -> relax.Function:
            self._check_init()
            cfg, plist, dtype = self.config, self.param_list, str(self.dtype)
            n = len(plist)
            beta1, beta2 = cfg.betas
            tensors = [p.ty for p in plist]
            scalar = relax.TensorType((), dtype)
            params = relax.Var("params", relax.TupleType(tensors))
            grads = relax.Var("gradients", relax.TupleType(tensors))
            states = relax.Var("optim_states", relax.TupleType(
                [scalar, scalar, *tensors, *tensors]))

            def c(value):
                return relax.const(value, dtype)

            op = relax.op
            bb = relax.BlockBuilder()
            with bb.function(self.name, [params, grads, states]):
                with bb.dataflow():
                    # bias corrections 1 - beta**t, updated without cancellation
                    c1 = bb.emit(op.add(c(1.0 - beta1), op.multiply(
                        c(beta1), relax.TupleGetItem(states, 0))))
                    c2 = bb.emit(op.add(c(1.0 - beta2), op.multiply(
                        c(beta2), relax.TupleGetItem(states, 1))))
                    step_size = bb.emit(op.divide(c(cfg.lr), c1))   # lr / bias_correction1
                    bc2_sqrt = bb.emit(op.sqrt(c2))
                    new_params, new_m, new_v = [], [], []
                    for i, var in enumerate(plist):
                        p = bb.emit(relax.TupleGetItem(params, i), var.name)
                        g = bb.emit(relax.TupleGetItem(grads, i))
                        m = relax.TupleGetItem(states, 2 + i)
                        v = relax.TupleGetItem(states, 2 + n + i)
                        if cfg.weight_decay:
                            g = bb.emit(op.add(g, op.multiply(p, c(cfg.weight_decay))))
                        # exp_avg.lerp_(grad, 1 - beta1): m + w * (g - m) for w < 0.5
                        m = bb.emit(op.add(m, op.multiply(c(1.0 - beta1), op.subtract(g, m))))
                        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                        v = bb.emit(op.add(op.multiply(v, c(beta2)),
                                           op.multiply(op.multiply(c(1.0 - beta2), g), g)))
                        # denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
                        denom = op.add(op.divide(op.sqrt(v), bc2_sqrt), c(cfg.eps))
                        # param.addcdiv_(exp_avg, denom, value=-step_size)
                        p_new = bb.emit(op.subtract(p, op.multiply(step_size, op.divide(m, denom))))
                        new_params.append(p_new)
                        new_m.append(m)
                        new_v.append(v)
                    out_params = bb.emit_output(relax.Tuple(new_params))
                    out_states = bb.emit_output(relax.Tuple([c1, c2, *new_m, *new_v]))
                bb.emit_func_output(relax.Tuple([out_params, out_states]))
            return bb.get()[self.name]

    return TorchAdam


def _TorchAdam(config: Adam):
    return _torch_adam_class()(config)
