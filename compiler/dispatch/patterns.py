"""The pattern table: which Relax subgraphs a tuned library may take over.

One table for every library and backend (style.md: patterns are registered in one place).
A pattern is a root operator followed by an epilogue, a sequence of steps applied to the
root's result: `bias` (add of a constant broadcast along the last axis), `residual` (add of
a tensor of the output's shape), and an activation. A library says which patterns it
implements; FuseOpsByPattern tries longer patterns first, so a conv2d followed by bias,
residual add and relu becomes one library call when the library offers it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

ROOTS = {
    "conv2d": "relax.nn.conv2d",
    "matmul": "relax.matmul",
}
ACTIVATIONS = {
    "relu": "relax.nn.relu",
    "gelu": "relax.nn.gelu",
}
STEPS = ("bias", "residual")


@dataclass(frozen=True)
class Pattern:
    """A root op and its epilogue, e.g. Pattern("conv2d", ("bias", "residual", "relu"))."""

    root: str
    epilogue: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "anychip." + "_".join((self.root, *self.epilogue))

    @property
    def activation(self) -> str | None:
        last = self.epilogue[-1] if self.epilogue else None
        return last if last in ACTIVATIONS else None

    def build(self):
        """(DFPattern, {annotation name: DFPattern}) for FuseOpsByPattern."""
        from tvm.relax.dpl import is_const, is_op, wildcard

        data, weight = wildcard(), wildcard()
        out = is_op(ROOTS[self.root])(data, weight)
        annotations = {"data": data, "weight": weight, "root": out}
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
        for use_bias, use_residual in itertools.product((True, False), repeat=2):
            steps = (("bias",) if use_bias else ()) + (("residual",) if use_residual else ())
            for act in (*ACTIVATIONS, None):
                found.append(Pattern(root, steps + ((act,) if act else ())))
    return sorted(found, key=lambda p: -len(p.epilogue))


def by_name() -> dict[str, Pattern]:
    return {p.name: p for p in all_patterns()}
