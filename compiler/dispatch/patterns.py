"""The pattern table: which Relax subgraphs a tuned library may take over.

One table for every library and backend (patterns are registered in one place).
A pattern is a root operator followed by an epilogue, a sequence of steps applied to the
root's result: `bias` (add of a constant broadcast along the last axis), `residual` (add of
a tensor of the output's shape), and an activation. Only the compute-bound roots (conv2d,
matmul) take epilogues; the memory-bound ones (softmax, layer_norm, max/avg_pool2d) are offered
alone, for libraries whose vectorized kernels beat TVM's untuned loops. A library says which
patterns it implements; FuseOpsByPattern tries longer patterns first, so a conv2d followed by
bias, residual add and relu becomes one library call when the library offers it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# root name -> (Relax op, names of its operands in order)
ROOTS = {
    "conv2d": ("relax.nn.conv2d", ("data", "weight")),
    "matmul": ("relax.matmul", ("data", "weight")),
    "softmax": ("relax.nn.softmax", ("data",)),
    "layer_norm": ("relax.nn.layer_norm", ("data", "gamma", "beta")),
    "max_pool2d": ("relax.nn.max_pool2d", ("data",)),
    "avg_pool2d": ("relax.nn.avg_pool2d", ("data",)),
    # softmax(query @ key_t / scale) @ value (or * scale): fused attention (SDPA) for libraries
    # that have it; the op named is the one that must be present for the pattern to be tried
    "attention": ("relax.nn.softmax", ("query", "key_t", "value")),
}
WITH_EPILOGUE = ("conv2d", "matmul")
# activation -> the Relax op its pattern ends with; silu, hardswish and clip are matched in
# the forms the importers produce (_activation) and take ACTIVATION_OPS ops beyond the root
ACTIVATIONS = {
    "relu": "relax.nn.relu",
    "gelu": "relax.nn.gelu",
    "gelu_tanh": "relax.nn.gelu_tanh",   # GPT-2's GELU (ONNX Gelu approximate="tanh")
    "sigmoid": "relax.sigmoid",
    "silu": "relax.multiply",      # z * sigmoid(z), either order (ONNX Sigmoid, Mul), or nn.silu
    "hardswish": "relax.multiply",  # z * (clip(z + 3, 0, 6) / 6): TVM's import of HardSwish
    "clip": "relax.clip",          # clip(z, lo, hi): relu6, or a HardSigmoid folded into a conv
}
ACTIVATION_OPS = {"silu": 2, "hardswish": 4}


@dataclass(frozen=True)
class Pattern:
    """A root op and its epilogue, e.g. Pattern("conv2d", ("bias", "residual", "relu"))."""

    root: str
    epilogue: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "anychip." + "_".join((self.root, *self.epilogue))

    @property
    def operands(self) -> tuple[str, ...]:
        return ROOTS[self.root][1]

    @property
    def size(self) -> int:
        """Ops matched: FuseOpsByPattern must try larger patterns first."""
        extra = sum(ACTIVATION_OPS.get(step, 1) - 1 for step in self.epilogue)
        return 1 + len(self.epilogue) + extra + (3 if self.root == "attention" else 0)

    @property
    def activation(self) -> str | None:
        last = self.epilogue[-1] if self.epilogue else None
        return last if last in ACTIVATIONS else None

    def build(self):
        """(DFPattern, {annotation name: DFPattern}) for FuseOpsByPattern."""
        from tvm.relax.dpl import is_const, is_op, wildcard

        op, names = ROOTS[self.root]
        operands = {name: wildcard() for name in names}
        if self.root == "attention":
            scale = is_const()
            scores = is_op("relax.matmul")(operands["query"], operands["key_t"])
            scaled = is_op("relax.divide")(scores, scale) | is_op("relax.multiply")(scores, scale)
            out = is_op("relax.matmul")(is_op("relax.nn.softmax")(scaled), operands["value"])
            return out, {**operands, "scale": scale, "root": out}
        out = is_op(op)(*operands.values())
        annotations = {**operands, "root": out}
        for step in self.epilogue:
            if step == "bias":
                bias = is_const()
                out = is_op("relax.add")(out, bias)
                annotations["bias"] = bias
            elif step == "residual":
                residual = wildcard()
                out = is_op("relax.add")(out, residual) | is_op("relax.add")(residual, out)
                annotations["residual"] = residual
            else:
                out = _activation(step, out, annotations)
        return out, annotations

    def constants_ok(self, annotated: dict) -> bool:
        """The constants of a multi-op activation are the ones that make it that activation
        (hardswish: z + 3, clipped to [0, 6], divided by 6 or times 1/6)."""
        if self.activation == "clip":
            return clip_bounds(annotated["act_clip"]) is not None
        if self.activation != "hardswish":
            return True
        gate, three = annotated["act_gate"], _scalar(annotated["act_three"])
        scale = _scalar(gate.args[1])
        divides = str(gate.op.name) == "relax.divide"
        return (three == 3.0 and clip_bounds(annotated["act_clip"]) == (0.0, 6.0)
                and scale is not None and abs(scale - (6.0 if divides else 1 / 6)) < 1e-6)


def _activation(step: str, z, annotations: dict):
    """The DFPattern of activation `step` applied to `z` (z may appear twice: the matcher binds
    both uses to one expression)."""
    from tvm.relax.dpl import is_const, is_op, wildcard

    if step == "silu":
        gate = is_op("relax.sigmoid")(z)
        return (is_op("relax.multiply")(z, gate) | is_op("relax.multiply")(gate, z)
                | is_op("relax.nn.silu")(z))
    if step == "hardswish":
        three = is_const()
        clip = is_op("relax.clip")(is_op("relax.add")(z, three), wildcard(), wildcard())
        gate = is_op("relax.divide")(clip, is_const()) | is_op("relax.multiply")(clip, is_const())
        annotations.update(act_three=three, act_clip=clip, act_gate=gate)
        return is_op("relax.multiply")(z, gate) | is_op("relax.multiply")(gate, z)
    if step == "clip":
        clip = is_op("relax.clip")(z, wildcard(), wildcard())
        annotations["act_clip"] = clip
        return clip
    return is_op(ACTIVATIONS[step])(z)


def _scalar(expr) -> float | None:
    """The value of a scalar (or one-element) float constant, else None."""
    import tvm

    if not isinstance(expr, tvm.ir.expr.GenericConst) or expr.value.numpy().size != 1:
        return None
    return float(expr.value.numpy().reshape(-1)[0])


def clip_bounds(call) -> tuple[float, float] | None:
    """(lo, hi) of a relax.clip call whose bounds are numbers."""
    values = [getattr(arg, "value", None) for arg in call.args[1:]]   # IntImm / FloatImm
    if len(values) != 2 or any(not isinstance(v, (int, float)) for v in values):
        return None
    return float(values[0]), float(values[1])


def all_patterns() -> list[Pattern]:
    """Every pattern of the table, longest epilogue first (the order FuseOpsByPattern needs)."""
    found = []
    for root in ROOTS:
        if root not in WITH_EPILOGUE:
            found.append(Pattern(root))
            continue
        for use_bias, use_residual in itertools.product((True, False), repeat=2):
            steps = (("bias",) if use_bias else ()) + (("residual",) if use_residual else ())
            for act in (*ACTIVATIONS, None):
                found.append(Pattern(root, steps + ((act,) if act else ())))
    return sorted(found, key=lambda p: -p.size)


def by_name() -> dict[str, Pattern]:
    return {p.name: p for p in all_patterns()}
