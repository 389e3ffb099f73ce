"""The format-error rule (compiler/format_error.py): a reduced-precision output outside the
table's rtol/atol passes only within 3x the error of the format's own storage emulation, and a
wrong result fails it."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.compiler.backend import CompileOptions
from anychip.compiler.driver import compile_source
from anychip.compiler.format_error import (emulated_outputs, has_emulation, reference_rms, rmse,
                                           storage_emulation, within_format_error)
from anychip.compiler.frontend import load_model
from anychip.compiler.verify import verify_artifact

K, N = 4096, 256


def _matmul_model(w: np.ndarray) -> onnx.ModelProto:
    """y = x @ W + b, K=4096 products per output: values near zero carry fp16's rounding of
    terms of size ~1, so fp16 storage leaves some outside rtol=atol=1e-2."""
    b = np.linspace(-1, 1, N, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        "deep_dot", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weights() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((K, N)).astype(np.float32)


@pytest.mark.parametrize("precision,dtype", [("fp16", np.float16), ("bf16", ml_dtypes.bfloat16)])
def test_emulation_rounds_weights_inputs_and_every_node_output(precision, dtype):
    w = _weights()[:64, :8]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    emulated = storage_emulation(model, precision)
    assert [o.name for o in emulated.graph.output] == ["y"]
    assert sum(n.op_type == "Cast" for n in emulated.graph.node) == 4     # m and y, there and back
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    (got,) = emulated_outputs(model, {"x": x}, precision, "g")

    def rounded(a):
        return a.astype(dtype).astype(np.float32)

    m = rounded(rounded(x).astype(np.float64) @ rounded(w).astype(np.float64))
    np.testing.assert_allclose(got, rounded(np.maximum(m, 0)), rtol=1e-2, atol=0)
    assert not np.array_equal(got, np.maximum(x @ w, 0))


def test_precisions_without_a_storage_format_have_no_emulation():
    assert not has_emulation("fp32") and not has_emulation("tf32") and not has_emulation("int8")
    assert has_emulation("fp16") and has_emulation("bf16") and has_emulation("mixed")


def test_rmse_treats_a_nan_the_reference_lacks_as_infinite():
    e = np.array([1.0, 2.0, np.nan])
    assert rmse(np.array([1.0, 2.0, np.nan]), e) == 0.0
    assert rmse(np.array([1.0, np.nan, np.nan]), e) == float("inf")
    assert rmse(np.array([1.0, 2.0]), e) == float("inf")
    assert not within_format_error(float("inf"), 1.0, 1e-2)
    assert within_format_error(0.03, 0.01, 1e-2) and not within_format_error(0.032, 0.01, 1e-2)
    # fp16 storage that overflows bounds nothing: any result would be "within" an infinite error
    assert not within_format_error(0.0, float("inf"), 1e-2)
    assert not within_format_error(0.0, float("nan"), 1e-2)
    # nor does a format whose own error is above 10% of the output's RMS (it lost the signal)
    assert within_format_error(0.3, 0.1, 1e-2, signal_rms=1.0)
    assert not within_format_error(0.3, 0.2, 1e-2, signal_rms=1.0)
    assert reference_rms(np.array([3.0, 4.0, np.inf])) == pytest.approx(np.sqrt(12.5))


def test_fp16_result_outside_rtol_atol_passes_only_within_the_formats_error():
    """Simulated on ascend-910b (force_fp16): the cube's result misses rtol/atol on outputs near
    zero but is as close as fp16 storage allows; the same program with weights 1% off (a
    wrong kernel) is far outside both rules."""
    model = _matmul_model(_weights())
    report = anychip.verify(model, target="ascend-910b")
    (out,) = report.outputs
    assert report.precision == "fp16" and report.how == "simulated"
    assert out.mismatches > 0 and out.rule == "format-error"
    assert out.rmse <= 3 * out.format_rmse and report.passed, report.summary()
    assert "format-error rule" in report.summary()

    source = load_model(_matmul_model(_weights() * np.float32(1.01)), None, {})
    wrong = compile_source(source, "ascend-910b", CompileOptions())
    bad = verify_artifact(wrong, model, "deep_dot")
    (out,) = bad.outputs
    assert not bad.passed and out.rule == "format-error"
    assert out.rmse > 10 * out.format_rmse, bad.summary()


def test_an_explicit_tolerance_is_elementwise_only():
    report = anychip.verify(_matmul_model(_weights()), target="ascend-910b", rtol=1e-2, atol=1e-2)
    (out,) = report.outputs
    assert not report.passed and out.rule == "elementwise" and out.format_rmse is None


def test_matrix_cell_says_the_format_error_rule_decided(tmp_path):
    from anychip.compiler.conformance.matrix import run_cell

    path = tmp_path / "deep_dot.onnx"
    onnx.save(_matmul_model(_weights()), str(path))
    cell = run_cell(str(path), "ascend-910b")
    assert (cell.status, cell.passed, cell.rule) == ("simulated", True, "format-error")
    assert "within 3x its format's error" in cell.text()


def test_a_model_the_emulation_cannot_run_leaves_the_table_to_judge():
    graph = helper.make_graph([helper.make_node("Mystery", ["x"], ["y"], domain="vendor.ops")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("vendor.ops", 1)])
    assert emulated_outputs(model, {"x": np.ones(2, np.float32)}, "fp16", "g") is None


def test_cli_table_marks_a_pass_by_the_format_error_rule(tmp_path, capsys):
    from anychip.compiler.cli.main import main

    path = tmp_path / "deep_dot.onnx"
    onnx.save(_matmul_model(_weights()), str(path))
    assert main(["verify", str(path), "--target", "cpu,ascend-910b"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["cpu"][3] == "PASS" and rows["ascend-910b"][3] == "PASS*"
    assert "* outside rtol/atol, judged by the format-error rule" in out
