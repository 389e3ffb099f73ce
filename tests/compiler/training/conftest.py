"""Training tests: the targets they run on (models and the torch reference: torch_models.py).

`train_target` runs a test on cpu and ascend-910b by default, or on the targets given with
`--target`; a target whose profile is missing or that cannot run here is skipped with the reason
(by capability), or fails where ANYCHIP_REQUIRE names it.
"""

from __future__ import annotations

import pytest

DEFAULT_TARGETS = ["cpu", "ascend-910b"]


def pytest_generate_tests(metafunc) -> None:
    if "train_target" in metafunc.fixturenames:
        from anychip.compiler.pytest_plugin import selected_targets

        spec = metafunc.config.getoption("--target")
        names = DEFAULT_TARGETS if spec == "runnable" else selected_targets(spec)
        metafunc.parametrize("train_target", names, ids=names)


@pytest.fixture
def runnable(train_target) -> str:
    from anychip.compiler.pytest_plugin import require_runnable
    from anychip.compiler.registry import profiles

    if train_target not in profiles():
        pytest.skip(f"no '{train_target}' profile is installed here")
    require_runnable(train_target)
    return train_target
