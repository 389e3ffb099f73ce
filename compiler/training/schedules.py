"""Learning-rate schedules (`anychip.optim.schedules`): a factor of the optimizer's lr per update.

    linear_warmup(warmup_steps, total_steps=None)   0 -> 1 over warm-up, then linear to 0
    cosine(total_steps, warmup_steps=0, min_factor=0) warm-up, then half a cosine to min_factor
    step(step_size, gamma=0.1)                      torch's StepLR: gamma ** (t // step_size)

`t` counts optimizer updates from 0, as torch's LambdaLR does when scheduler.step() follows
each optimizer.step(); the warm-up and cosine formulas are transformers'
get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup (the first update of a
warm-up runs at lr 0, as there). The trainer writes lr * factor(t) into the compiled step's lr
slot before each update (training/optim.py), so a schedule never needs a recompile; it is
part of the trainer's plan and of every checkpoint's position.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import AnychipError


def _positive(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise AnychipError(f"schedule: {name} must be an integer {'>= 0' if allow_zero else '> 0'}"
                           f", got {value!r}.")


@dataclass(frozen=True)
class Schedule:
    kind: str
    warmup_steps: int = 0
    total_steps: int | None = None
    min_factor: float = 0.0
    step_size: int = 1
    gamma: float = 0.1

    def factor(self, t: int) -> float:
        """The lr multiplier of update number t (0-based)."""
        if self.kind == "step":
            return self.gamma ** (t // self.step_size)
        if t < self.warmup_steps:
            return t / max(1, self.warmup_steps)
        if self.total_steps is None:
            return 1.0
        progress = (t - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.kind == "linear_warmup":
            return max(0.0, 1.0 - progress)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return self.min_factor + (1.0 - self.min_factor) * cosine

    def as_dict(self) -> dict:
        return asdict(self)


def linear_warmup(warmup_steps: int, total_steps: int | None = None) -> Schedule:
    _positive("warmup_steps", warmup_steps, allow_zero=True)
    if total_steps is not None:
        _positive("total_steps", total_steps)
    return Schedule("linear_warmup", warmup_steps=warmup_steps, total_steps=total_steps)


def cosine(total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0) -> Schedule:
    _positive("total_steps", total_steps)
    _positive("warmup_steps", warmup_steps, allow_zero=True)
    if not 0.0 <= min_factor <= 1.0:
        raise AnychipError(f"schedule: min_factor must be in [0, 1], got {min_factor!r}.")
    return Schedule("cosine", warmup_steps=warmup_steps, total_steps=total_steps,
                    min_factor=float(min_factor))


def step(step_size: int, gamma: float = 0.1) -> Schedule:
    _positive("step_size", step_size)
    if not (isinstance(gamma, (int, float)) and 0.0 < gamma and math.isfinite(gamma)):
        raise AnychipError(f"schedule: gamma must be a finite number > 0, got {gamma!r}.")
    return Schedule("step", step_size=step_size, gamma=float(gamma))


def from_dict(data: dict | None) -> Schedule | None:
    return None if data is None else Schedule(**data)
