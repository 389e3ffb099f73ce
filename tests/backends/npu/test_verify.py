"""End to end: zoo models compile, simulate and match ONNX Runtime at the tolerance of the
precision used, and every report says the run was simulated."""

from __future__ import annotations

import pytest

import anychip
from anychip.compiler.tolerances import tolerance_for

from .conftest import conv_model


def _check(report, precision="fp16"):
    assert report.how == "simulated"
    assert report.precision == precision
    tol = tolerance_for(precision, "float32")
    assert all(o.rtol == tol.rtol and o.atol == tol.atol for o in report.outputs)
    assert report.passed, report.summary()
    assert "simulated" in report.summary()


def test_mlp_matches_onnxruntime(npu_target):
    _check(anychip.verify("zoo:mlp", target=npu_target))


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_grouped_strided_conv_matches_onnxruntime(groups):
    _check(anychip.verify(conv_model(groups), target="ascend-310p"))


def test_resnet18_matches_onnxruntime_on_910b():
    _check(anychip.verify("zoo:resnet18", target="ascend-910b"))


def test_light_cnn_matches_onnxruntime_on_310p():
    _check(anychip.verify("zoo:squeezenet", target="ascend-310p"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "squeezenet", "bert", "shufflenet",
                                  "inception_v1"])
def test_zoo_matches_onnxruntime(name, npu_target):
    _check(anychip.verify(f"zoo:{name}", target=npu_target))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["allow_fp32_to_fp16", "allow_mix_precision"])
def test_resnet18_in_other_modes(mode, npu_target):
    report = anychip.verify("zoo:resnet18", target=npu_target, precision_mode=mode)
    _check(report, "mixed" if mode == "allow_mix_precision" else "fp16")
