"""CPU backend: TVM LLVM for the host CPU (model and features detected), executed by the Relax VM.

The lowering follows TVM's own relax/backend/cpu_generic pipeline, phase by phase (style.md),
with inference-time decomposition first so batch norm becomes elementwise ops that fuse.
"""

from __future__ import annotations

import os

import numpy as np

from anychip.compiler.backend import (BuildResult, CompileOptions, Execution, Mode,
                                      OptionalBackendHooks)
from anychip.compiler.errors import AnychipError
from anychip.compiler.profiles import Profile


def host_cpu_name() -> str:
    import tvm

    return tvm.get_global_func("tvm.codegen.llvm.GetHostCPUName")()


class CpuBackend(OptionalBackendHooks):
    family = "cpu"

    def target(self, profile: Profile):
        import tvm

        attrs = dict(profile.target)
        if attrs.get("mcpu") == "host":
            attrs["mcpu"] = host_cpu_name()
        attrs.setdefault("num-cores", os.cpu_count() or 1)
        return tvm.target.Target(attrs)

    def execution(self, profile: Profile) -> Execution:
        return Execution(Mode.EXECUTES, f"host CPU ({host_cpu_name()}) through TVM LLVM")

    def lower(self, mod, profile: Profile, options: CompileOptions):
        import tvm
        from tvm import relax

        precision = options.precision or profile.default_precision
        if precision not in profile.precisions:
            raise AnychipError(f"target '{profile.name}' supports --precision "
                               f"{', '.join(profile.precisions)}, not '{precision}'.")
        target = self.target(profile)
        passes = [relax.transform.DecomposeOpsForInference(), relax.transform.FoldConstant()]
        with target:
            return tvm.transform.Sequential(passes)(mod)

    def build(self, mod, profile: Profile, options: CompileOptions) -> BuildResult:
        from tvm import relax

        target = self.target(profile)
        executable = relax.build(mod, target, relax_pipeline="default")
        return BuildResult(executable=executable,
                           precision=options.precision or profile.default_precision,
                           report={"target": str(target)},
                           runtime={"device": "cpu", "mcpu": target.attrs["mcpu"]})

    def runner(self, artifact) -> "VmRunner":
        return VmRunner(artifact, "cpu", self.execution(artifact.profile))

    def check_loadable(self, manifest: dict) -> None:
        built_for = manifest.get("runtime", {}).get("mcpu")
        here = host_cpu_name()
        if built_for and built_for != here:
            raise AnychipError(f"artifact was built for CPU '{built_for}' but this host is "
                               f"'{here}'; its code may use instructions this CPU lacks. "
                               f"Recompile it here.")


class VmRunner:
    """Runs an artifact's lib.so on a TVM device through the Relax VM (shared by host-run backends)."""

    def __init__(self, artifact, device: str, execution: Execution):
        import tvm
        from tvm import relax

        self.execution = execution
        self._dev = tvm.device(device, 0)
        lib = tvm.runtime.load_module(str(artifact.library_path))
        self._vm = relax.VirtualMachine(lib, self._dev)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        import tvm

        args = [tvm.runtime.tensor(np.ascontiguousarray(x), self._dev) for x in inputs]
        out = self._vm["main"](*args)
        return [np.asarray(o.numpy()) for o in _flatten(out)]


def _flatten(value) -> list:
    import tvm

    if isinstance(value, tvm.runtime.Tensor):
        return [value]
    result = []
    for item in value:
        result.extend(_flatten(item))
    return result
