"""The 'gpu' backend family: registered with its profiles, not built yet (see its issue)."""

from anychip.compiler.backend import Execution, Mode, OptionalBackendHooks
from anychip.compiler.errors import NotExecutable


class GpuBackend(OptionalBackendHooks):
    family = "gpu"

    def execution(self, profile):
        return Execution(Mode.UNAVAILABLE, "the 'gpu' backend is not built yet")

    def target(self, profile):
        raise NotExecutable(f"target '{profile.name}': the 'gpu' backend is not built yet.")

    lower = build = target

    def runner(self, artifact):
        raise NotExecutable("the 'gpu' backend is not built yet.")
