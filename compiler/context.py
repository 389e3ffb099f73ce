"""CompileContext: the state of one compile, owned by the driver and passed to every step.

Why an explicit object: before it, the ONNX model, the specialised input values and the
"this is a train step" flag rode in `CompileOptions.extra` beside the user's options, and each
backend carried its report from `lower` to `build` as JSON in an IRModule attribute. The
context says what a step may read (the model as imported, the family's validated options) and
where it writes (the report under construction, per-step timings).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from . import progress
from .family_options import FamilyOptions


@dataclass
class CompileContext:
    """One compile of one model for one target.

    `model`: the checked ONNX model the Relax module was imported from (None for a train step,
    which has no ONNX graph); `specialised`: {safe input name: value} the importer folded in;
    `options`: the family's validated Options; `precision`: the precision asked for (None:
    the profile's default); `training`: the module is a train step;
    `report`: report.json under construction (steps add their sections); `timings`: seconds
    per step, in the order they ran (written to report.json and shown with --verbose);
    `scratch`: what a family's step leaves for a later step of the same compile (the npu
    family's fused ONNX model, from prepare_onnx to build), never written anywhere.
    """

    label: str = "model"
    model: Any = None
    specialised: dict[str, Any] = field(default_factory=dict)
    options: FamilyOptions = field(default_factory=FamilyOptions)
    precision: str | None = None
    training: bool = False
    report: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str):
        """Time one step: `with ctx.step("lower"): ...` (repeated names add up)."""
        started = time.perf_counter()
        try:
            with progress.stage(name):
                yield
        finally:
            spent = time.perf_counter() - started
            self.timings[name] = round(self.timings.get(name, 0.0) + spent, 3)
