"""Family `toy`: builds with TVM's default Relax pipeline for the host CPU and says that it
simulates a chip. Its options and report section are its own, to show that they reach the
user through the contract (CLI flags, report.json, `anychip analyze`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anychip.backends.host.probe import host_target
from anychip.backends.host.vm_runner import VmRunner
from anychip.compiler.backend import (BuildResult, CompileContext, CompileOptions, Execution,
                                      FamilyOptions, Mode, OptionalBackendHooks, option)


@dataclass(frozen=True)
class ToyOptions(FamilyOptions):
    lanes: int = option(4, "vector lanes of the toy chip (recorded in the report)")
    fold_constants: bool = option(True, "fold constant subgraphs before the build",
                                  metavar="BOOL")


class ToyBackend(OptionalBackendHooks):
    family = "toy"
    Options = ToyOptions

    def profile_paths(self) -> list[Path]:
        return sorted((Path(__file__).parent / "profiles").glob("*.yaml"))

    def target(self, profile):
        return host_target(profile)

    def execution(self, profile) -> Execution:
        return Execution(Mode.SIMULATES, "toy simulator on the host CPU (TVM LLVM)")

    def lower(self, mod, profile, options: CompileOptions, ctx: CompileContext | None = None):
        from tvm import relax

        ctx = ctx or self.context(profile, options)
        with self.target(profile):
            mod = relax.transform.DecomposeOpsForInference()(mod)
            if ctx.options.fold_constants:
                mod = relax.transform.FoldConstant()(mod)
        ctx.report["toy"] = {"lanes": ctx.options.lanes,
                             "folded": ctx.options.fold_constants,
                             "functions": len(mod.functions)}
        return mod

    def build(self, mod, profile, options: CompileOptions,
              ctx: CompileContext | None = None) -> BuildResult:
        from tvm import relax

        target = self.target(profile)
        executable = relax.build(mod, target)
        return BuildResult(executable=executable, precision="fp32",
                           report={"target": str(target)},
                           runtime={"device": "cpu", "mcpu": str(target.attrs["mcpu"]),
                                    "num_threads": 1, "libraries": []})

    def runner(self, artifact):
        return VmRunner(artifact, "cpu", self.execution(artifact.profile))

    def render(self, report: dict, top: int = 10) -> list[tuple[str, str]]:
        toy = report.get("toy")
        if not toy:
            return []
        return [("Toy chip", f"lanes {toy['lanes']}, constants folded: {toy['folded']}, "
                             f"{toy['functions']} functions")]
