"""The backend contract (docs/architecture.md): what every backend family implements.

A backend is one subpackage of backends/ (or a vendor's package) that registers itself under
the `anychip.backends` entry-point group. The compiler only talks to this contract and never
branches on a family's name: what differs between chips is in the profile or the backend.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .context import CompileContext
from .family_options import FamilyOptions, option
from .profiles import Profile

__all__ = ["Backend", "BuildResult", "CompileContext", "CompileOptions", "Execution",
           "FamilyOptions", "Mode", "OptionalBackendHooks", "Runner", "option"]


class Mode(str, enum.Enum):
    """How a target runs a model on this machine. Every result carries one of these."""

    EXECUTES = "executes"        # real execution on real hardware (the host, a present GPU)
    SIMULATES = "simulates"      # functional simulator with the chip's numerics
    COMPILES_ONLY = "compiles-only"  # code is generated and checked, not run here
    UNAVAILABLE = "unavailable"  # cannot even compile here (backend not built, toolchain missing)

    @property
    def verb(self) -> str:
        """Past participle used in reports: how a result was obtained."""
        return {"executes": "executed", "simulates": "simulated",
                "compiles-only": "compiled only", "unavailable": "not compiled"}[self.value]


@dataclass(frozen=True)
class Execution:
    """A target's execution mode on this machine, with the reason a user can act on."""

    mode: Mode
    why: str

    @property
    def can_run(self) -> bool:
        return self.mode in (Mode.EXECUTES, Mode.SIMULATES)


@dataclass
class CompileOptions:
    """Options of one compile. `extra` holds the family's own options as keyword arguments;
    the driver validates them against the backend's `Options` (an unknown key is an error)."""

    precision: str | None = None          # None: the profile's default
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    opt_level: int = 3
    extra: dict[str, Any] = field(default_factory=dict)
    # the artifact runs many times (an LM's decode step): a backend may spend compile time
    # for run time there, as for a train step (the npu simulator's optimised host build)
    hot: bool = False
    # symbolic dims (docs/dynamic-shapes.md): {symbol: (lo, hi)} bounds, and for families
    # that compile static programs (static_shapes) {symbol: (gear, ...)}; every family
    dims: dict[str, tuple[int, int]] = field(default_factory=dict)
    gears: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"precision": self.precision, "opt_level": self.opt_level,
                **({"hot": True} if self.hot else {}),
                "shapes": {k: list(v) for k, v in sorted(self.shapes.items())},
                **({"dims": {k: list(v) for k, v in sorted(self.dims.items())}}
                   if self.dims else {}),
                **({"gears": {k: list(v) for k, v in sorted(self.gears.items())}}
                   if self.gears else {}),
                "extra": {k: v for k, v in sorted(self.extra.items())
                          if isinstance(v, (str, int, float, bool, list, dict, type(None)))}}


@dataclass
class BuildResult:
    """What a backend's build produces; the driver packs it into an Artifact (docs/architecture.md).

    `executable` is a TVM relax Executable (exported as lib.so), `device_sources` maps file names
    under device/ to their bytes, `report` goes to report.json, `precision` is the precision
    actually used (it picks the verification tolerance).
    """

    executable: Any
    precision: str
    device_sources: dict[str, bytes] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)   # what the runner needs (device kind...)


class Runner(Protocol):
    """Runs a loaded artifact: numpy in, numpy out, in the artifact's input and output order."""

    execution: Execution

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


@runtime_checkable
class Backend(Protocol):
    """One backend family: the whole contract between the compiler and a family.

    The driver (compiler/driver.py) calls, in order, for one model and one target:
    `Options.parse(extra)` -> [`prepare_onnx`] -> import + target-neutral passes -> `lower`
    (or `lower_train_step`) -> `build` -> artifact; later `runner` for a loaded artifact. A
    CompileContext goes to every step: the report under construction, timings, the model.
    Optional hooks and their defaults are in OptionalBackendHooks.
    """

    family: str
    Options: type[FamilyOptions]

    def target(self, profile: Profile) -> Any:
        """The tvm.target.Target for this chip."""

    def lower(self, mod: Any, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None) -> Any:
        """Target-neutral Relax IRModule -> target-legal Relax IRModule; report sections go
        into ctx.report."""

    def build(self, mod: Any, profile: Profile, options: CompileOptions,
              ctx: CompileContext | None = None) -> BuildResult:
        """Lowered Relax IRModule -> BuildResult (its report extends ctx.report)."""

    def execution(self, profile: Profile) -> Execution:
        """Whether this machine can run code for this chip, and why."""

    def runner(self, artifact: Any) -> Runner:
        """A Runner for a loaded artifact; raises NotExecutable(why) when it cannot run here."""


# Keys that used to ride in CompileOptions.extra beside the user's options, and the
# CompileContext field that replaces each: still accepted from older callers, never passed on.
LEGACY_PLUMBING = {"onnx_model": "model", "onnx_specialise": "specialised",
                   "training": "training"}


class OptionalBackendHooks:
    """Optional hooks a backend may provide; a mixin with the defaults the compiler relies on."""

    chip_schema: dict | None = None
    Options: type[FamilyOptions] = FamilyOptions   # a family without options of its own
    # True for a family whose lowering plans static tiles and buffers: a model with symbolic
    # dims is compiled as one static program per gear (compiler/gears.py)
    static_shapes: bool = False
    # True for a family whose lowering takes Adam's per-parameter update as one TIR kernel
    # with three outputs (compiler/training/optim.py `_adam_kernel`); others get operators
    fused_optimizer_update: bool = False
    # the family's options `anychip tune` lowers with (kernels in a form MetaSchedule can
    # estimate and tune), e.g. cpu's {"fast_math": False}
    tuning_options: dict = {}

    def prepare_onnx(self, model: Any, profile: Profile, opts: FamilyOptions,
                     ctx: CompileContext) -> Any:
        """For a family that makes its decisions per ONNX node, as a vendor's graph compiler
        does (fusion, placement, casts): the rewritten onnx.ModelProto, which the driver then
        imports (with ctx.specialised) instead of the original, so the model is imported once
        and `lower` receives that module. None (the default): import the model as it is."""
        return None

    def context(self, profile: Profile, options: CompileOptions, **fields) -> CompileContext:
        """A context for one compile: the family's options validated from options.extra."""
        values = dict(options.extra)
        for key, name in LEGACY_PLUMBING.items():   # callers not yet moved to the context
            if key in values:
                value = values.pop(key)
                fields.setdefault(name, dict(value) if key == "onnx_specialise" else value)
        opts = self.Options.parse(values, getattr(self, "family", "?"), f"target '{profile.name}'")
        fields.setdefault("precision", options.precision)
        return CompileContext(options=opts, **fields)

    def lower_train_step(self, mod: Any, profile: Profile, options: CompileOptions,
                         ctx: CompileContext) -> Any:
        """A train step (forward, gradients, optimizer in one Relax module, no ONNX graph).
        Default: the family's `lower`, for families whose lowering takes any Relax module.
        Raise NotImplementedError when the family cannot lower one yet."""
        return self.lower(mod, profile, options, ctx)

    def profile_paths(self) -> list:
        """Chip profiles (YAML files) this family ships beyond backends/profiles/, so that a
        family installed as a separate package brings its chips with it."""
        return []

    def conformance_options(self, profile: Profile) -> dict:
        """Options the ONNX operator suite compiles with by default on this family's targets.
        The suite checks operator semantics at each case's float32-level tolerances, so a
        family whose default lowers precision can ask for the model's own dtypes here."""
        return {}

    def cache_key_parts(self, profile: Profile) -> dict:
        """What the compile cache must key on beyond the profile and the options (the host
        CPU a build is specialised for, a kernel library's version...)."""
        return {}

    def render(self, report: dict, top: int = 10) -> list[tuple[str, str]]:
        """The family's own sections of report.json as text, [(title, body)], printed by
        `anychip analyze` and `anychip verify --verbose` without knowing the family."""
        return []

    def gear_summary(self, report: dict) -> dict:
        """A static_shapes family: what report.json's `gears` lists for one gear from that
        gear's own report, next to its compile time and size (compiler/gears.py); e.g. the
        npu's buffer check and cost-model estimate at the gear's static shape."""
        return {}

    def doctor(self) -> list[dict]:
        """Facts about this machine for `anychip doctor`: [{name, found, version, detail}]."""
        return []

    def execute_kernels(self, model, target: str, precision: str | None = None,
                        shapes: dict | None = None, dims: dict | None = None):
        """Execute each generated kernel on its own, for a target whose whole model cannot run
        on this machine (`anychip verify --kernels`); a report with `.passed`, `.summary()`,
        `.kernels` and `.as_dict()`. Backends without such a device say so."""
        from .errors import AnychipError

        raise AnychipError(f"target '{target}': its family has no per-kernel execution on "
                           f"this machine ('anychip verify --kernels' needs a device that runs "
                           f"the family's kernels one by one); use plain 'anychip verify' here.")

    def bench_device(self, profile) -> str:
        """Where `anychip bench` runs ONNX Runtime and torch for a fair ratio: 'cpu' (the
        host), or the torch device name of the accelerator this target's artifacts run on."""
        return "cpu"

    def check_loadable(self, manifest: dict) -> None:
        """Refuse an artifact this host must not load (other CPU features...); raise AnychipError."""
