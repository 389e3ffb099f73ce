"""Every runnable target matches ONNX Runtime on the zoo, at the tolerance of the precision used."""

from __future__ import annotations

import pytest

import anychip
from anychip import models
from anychip.compiler.pytest_plugin import require_runnable

QUICK = ["mlp", "resnet18"]


@pytest.mark.parametrize("name", QUICK)
def test_zoo_model_matches_onnxruntime(name, anychip_target):
    require_runnable(anychip_target)
    report = anychip.verify(f"zoo:{name}", target=anychip_target)
    assert report.how in ("executed", "simulated")
    assert report.passed, report.summary()
    assert report.outputs and all(o.size > 0 for o in report.outputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in models.names() if n not in QUICK])
def test_every_zoo_model_matches_onnxruntime_on_cpu(name):
    report = anychip.verify(f"zoo:{name}", target="cpu")
    assert report.how == "executed"
    assert report.passed, report.summary()
