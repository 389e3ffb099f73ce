"""The backend contract (design.md §4): what every backend family implements.

A backend is one subpackage of backends/ (or a vendor's package) that registers itself under
the `anychip.backends` entry-point group. The compiler only talks to this contract and never
branches on a family's name: what differs between chips is in the profile or the backend.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .profiles import Profile


class Mode(str, enum.Enum):
    """How a target runs a model on this machine. Every result carries one of these."""

    EXECUTES = "executes"        # real execution on real hardware (cpu, cuda with a GPU)
    SIMULATES = "simulates"      # functional simulator with the chip's numerics (npu)
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
    """Options of one compile. `extra` carries family-specific options (e.g. NPU precision mode)."""

    precision: str | None = None          # None: the profile's default
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    opt_level: int = 3
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"precision": self.precision, "opt_level": self.opt_level,
                "shapes": {k: list(v) for k, v in sorted(self.shapes.items())},
                "extra": {k: v for k, v in sorted(self.extra.items())
                          if isinstance(v, (str, int, float, bool, list, dict, type(None)))}}


@dataclass
class BuildResult:
    """What a backend's build produces; the driver packs it into an Artifact (design.md §5).

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
    """One backend family. See design.md §4; CompileOptions and BuildResult are defined above."""

    family: str

    def target(self, profile: Profile) -> Any:
        """The tvm.target.Target for this chip."""

    def lower(self, mod: Any, profile: Profile, options: CompileOptions) -> Any:
        """Target-neutral Relax IRModule -> target-legal Relax IRModule."""

    def build(self, mod: Any, profile: Profile, options: CompileOptions) -> BuildResult:
        """Lowered Relax IRModule -> BuildResult."""

    def execution(self, profile: Profile) -> Execution:
        """Whether this machine can run code for this chip, and why."""

    def runner(self, artifact: Any) -> Runner:
        """A Runner for a loaded artifact; raises NotExecutable(why) when it cannot run here."""


class OptionalBackendHooks:
    """Optional hooks a backend may provide; a mixin with the defaults the compiler relies on."""

    chip_schema: dict | None = None

    def doctor(self) -> list[dict]:
        """Facts about this machine for `anychip doctor`: [{name, found, version, detail}]."""
        return []

    def execute_kernels(self, model, target: str, precision: str | None = None,
                        shapes: dict | None = None):
        """Execute each generated kernel on its own, for a target whose whole model cannot run
        on this machine (`anychip verify --kernels`); a report with `.passed`, `.summary()`,
        `.kernels` and `.as_dict()`. Backends without such a device say so."""
        from .errors import AnychipError

        raise AnychipError(f"target '{target}': --kernels runs GPU targets' kernels one by one "
                           f"(OpenCL-dialect ones on PoCL, nvidia-* on an NVIDIA GPU); use "
                           f"plain 'anychip verify' here.")

    def bench_device(self, profile) -> str:
        """Where `anychip bench` runs ONNX Runtime and torch for a fair ratio: 'cpu' (the
        host), or 'cuda' for a target whose artifacts run on an NVIDIA GPU here."""
        return "cpu"

    def check_loadable(self, manifest: dict) -> None:
        """Refuse an artifact this host must not load (other CPU features...); raise AnychipError."""
