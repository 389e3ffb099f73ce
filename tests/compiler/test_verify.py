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


def test_scalar_inputs_keep_rank_zero(anychip_target, tmp_path):
    """A 0-d input reaches the VM as 0-d (np.ascontiguousarray would make it 1-d and the VM
    rejects it), and the result matches ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper

    require_runnable(anychip_target)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])], "scalar_mul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])])
    path = tmp_path / "scalar_mul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    report = anychip.verify(str(path), target=anychip_target)
    assert report.passed, report.summary()


def test_an_onnx_runtime_refusal_reads_as_one_line_with_the_reason():
    from anychip.compiler.reference import ort_error_line

    exc = RuntimeError("[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/"
                       "model.cc:202 onnxruntime::Model::Model(onnx::ModelProto&&, const "
                       "onnxruntime::PathString&, const onnxruntime::ModelOptions&) Unsupported "
                       "model IR version: 14, max supported IR version: 13")
    line = ort_error_line(exc)
    assert "\n" not in line and "model.cc" not in line
    assert "IR version: 14" in line and "older ir_version" in line


def test_a_tvm_error_on_an_unlowered_op_names_the_op():
    """TVM's error for an op left unlowered ends with the call and the printer's "# Metadata
    omitted" note: the one line says why and which op, not the note."""
    import tvm
    from tvm import relax

    from anychip.compiler.errors import error_line

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 4, 2], "float32"))
    w = relax.Var("w", relax.TensorType([2, 2, 2, 2], "float32"))
    with bb.function("main", [x, w]):   # NHWC: TVM 0.27 lowers conv2d_transpose in NCHW only
        y = bb.emit(relax.op.nn.conv2d_transpose(x, w, strides=2, data_layout="NHWC"))
        bb.emit_func_output(y)
    with pytest.raises(Exception) as info:
        tvm.compile(bb.get(), target="llvm")
    line = error_line(info.value)
    assert "relax.nn.conv2d_transpose" in line and "cannot emit" in line, line
    assert "Metadata" not in line and "\n" not in line


def test_the_reference_runs_once_per_model_and_inputs(monkeypatch):
    """A matrix verifies one model on several targets with the same inputs: ONNX Runtime runs
    once (keyed by the model's digest and the inputs' bytes), and each caller gets a copy."""
    import numpy as np

    from anychip.compiler import reference
    from anychip.compiler.frontend import load_model

    from ..conftest import make_linear_model

    calls = []
    real = reference.run_onnxruntime
    monkeypatch.setattr(reference, "run_onnxruntime",
                        lambda *a: calls.append(1) or real(*a))
    source = load_model(make_linear_model())
    feed = {"x": np.arange(16, dtype=np.float32).reshape(2, 8)}
    first = reference.reference_outputs(source.original, feed, "m", source.sha256)
    first[0][...] = -1.0
    second = reference.reference_outputs(source.original, feed, "m", source.sha256)
    assert len(calls) == 1 and (second[0] >= 0).all()   # relu output, untouched by the caller
    np.testing.assert_array_equal(second[0], real(source.original, feed, "m")[0])
    reference.reference_outputs(source.original, {"x": feed["x"] + 1}, "m", source.sha256)
    assert len(calls) == 2   # other inputs: another run
