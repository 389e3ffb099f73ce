"""The 'npu' backend family: registered with its profiles, not built yet (see its issue)."""

from anychip.compiler.backend import Execution, Mode, OptionalBackendHooks
from anychip.compiler.errors import NotExecutable


class NpuBackend(OptionalBackendHooks):
    family = "npu"

    def execution(self, profile):
        return Execution(Mode.UNAVAILABLE, "the 'npu' backend is not built yet")

    def target(self, profile):
        raise NotExecutable(f"target '{profile.name}': the 'npu' backend is not built yet.")

    lower = build = target

    def runner(self, artifact):
        raise NotExecutable("the 'npu' backend is not built yet.")
