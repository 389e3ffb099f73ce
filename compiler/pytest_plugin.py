"""pytest plugin (entry point `pytest11`): `--target` and the `anychip_target` fixture.

Tests that take `anychip_target` run once per selected target; by default every target that
executes or simulates on this machine, so a new profile is tested by the existing tests.
Skips are by capability, with the reason. Where a CI cell declares hardware required
(ANYCHIP_REQUIRE=<family or target>,...), a missing capability fails instead of skipping.

Marker `runs_on(FAMILY)`: the test needs a target of that backend family that executes or
simulates on this machine (e.g. `@pytest.mark.runs_on("cuda")` for a real GPU); elsewhere it
is skipped with the family's reason. `pytest -m runs_on` selects every such test.
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


def _runnable_family(family: str) -> tuple[bool, str]:
    """Whether any target of `family` can run here, with the reason when none can."""
    from anychip.compiler.registry import execution, profiles

    reasons = []
    for profile in profiles().values():
        if profile.family == family:
            ex = execution(profile)
            if ex.can_run:
                return True, ""
            reasons.append(ex.why)
    return False, reasons[0] if reasons else f"no '{family}' profile"


def pytest_collection_modifyitems(config, items) -> None:
    """`runs_on(FAMILY)`-marked tests need a target of FAMILY that runs here: skipped with the
    reason elsewhere, failed where ANYCHIP_REQUIRE names the family (a CI cell that declares
    the hardware must not skip green)."""
    required = {s.strip() for s in os.environ.get("ANYCHIP_REQUIRE", "").split(",") if s.strip()}
    verdicts: dict[str, tuple[bool, str]] = {}
    for item in items:
        marker = item.get_closest_marker("runs_on")
        if marker is None:
            continue
        if not marker.args:
            item.add_marker(pytest.mark.anychip_missing("runs_on needs a family: "
                                                        "@pytest.mark.runs_on('FAMILY')"))
            continue
        family = str(marker.args[0])
        if family not in verdicts:
            verdicts[family] = _runnable_family(family)
        ok, why = verdicts[family]
        if ok:
            continue
        if family in required:
            item.add_marker(pytest.mark.anychip_missing(f"ANYCHIP_REQUIRE={family} but {why}"))
        else:
            item.add_marker(pytest.mark.skip(reason=f"needs a '{family}' target that runs "
                                                    f"here: {why}"))


def pytest_runtest_setup(item) -> None:
    marker = item.get_closest_marker("anychip_missing")
    if marker is not None:
        pytest.fail(marker.args[0])


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "runs_on(family): needs a target of that backend family "
                                       "that executes or simulates here (skipped with the reason "
                                       "otherwise)")
    config.addinivalue_line("markers", "slow: long cases, still run in CI")
    config.addinivalue_line("markers", "anychip_missing(why): required hardware is absent")
