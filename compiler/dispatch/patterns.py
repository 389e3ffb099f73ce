"""The pattern table: which Relax subgraphs a tuned library may take over.

One table for every library and backend (patterns are registered in one place).
A pattern is a root operator followed by an epilogue, a sequence of steps applied to the
root's result: `bias` (add of a constant broadcast along the last axis), `residual` (add of
a tensor of the output's shape), and an activation. Only the compute-bound roots (conv2d,
matmul) take epilogues; the memory-bound ones (softmax, layer_norm, max_pool2d) are offered
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
    # softmax(query @ key_t / scale) @ value (or * scale): fused attention (SDPA) for libraries
    # that have it; the op named is the one that must be present for the pattern to be tried
    "attention": ("relax.nn.softmax", ("query", "key_t", "value")),
}
WITH_EPILOGUE = ("conv2d", "matmul")
ACTIVATIONS = {
    "relu": "relax.nn.relu",
    "gelu": "relax.nn.gelu",
}


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
        return 1 + len(self.epilogue) + (3 if self.root == "attention" else 0)

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
                out = is_op(ACTIVATIONS[step])(out)
        return out, annotations


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
