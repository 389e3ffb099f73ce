"""pytest plugin (entry point `pytest11`): `--target` and the `anychip_target` fixture.

Tests that take `anychip_target` run once per selected target; by default every target that
executes or simulates on this machine, so a new profile is tested by the existing tests.
Skips are by capability, with the reason (style.md). Where a CI cell declares hardware
required (ANYCHIP_REQUIRE=cuda,npu...), a missing capability fails instead of skipping.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("anychip")
    group.addoption("--target", action="store", default="runnable",
                    help="anychip targets for the anychip_target fixture: 'runnable' (default: "
                         "all that execute or simulate here), 'all', or comma-separated names")


def selected_targets(spec: str) -> list[str]:
    from anychip.compiler.registry import targets

    infos = targets()
    if spec == "all":
        return [t.name for t in infos]
    if spec == "runnable":
        return [t.name for t in infos if t.execution in ("executes", "simulates")]
    return [s.strip() for s in spec.split(",") if s.strip()]


def pytest_generate_tests(metafunc) -> None:
    if "anychip_target" in metafunc.fixturenames:
        names = selected_targets(metafunc.config.getoption("--target"))
        metafunc.parametrize("anychip_target", names, ids=names)


def require_runnable(target: str) -> None:
    """Skip (or fail where required) when `target` cannot run on this machine."""
    from anychip.compiler.registry import execution, get_profile

    profile = get_profile(target)
    ex = execution(profile)
    if ex.can_run:
        return
    required = {s.strip() for s in os.environ.get("ANYCHIP_REQUIRE", "").split(",") if s.strip()}
    if profile.family in required or target in required:
        pytest.fail(f"{target} is required here (ANYCHIP_REQUIRE) but {ex.why}")
    pytest.skip(f"{target} cannot run here: {ex.why}")
