"""CLI contract: exit codes 0/1/2/3, one-line errors without tracebacks, files written whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from anychip.compiler.cli.main import main
from tests.conftest import make_linear_model


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "lin.onnx"
    onnx.save(make_linear_model("in/x", "out/y"), str(path))
    return path


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_targets_json_lists_fields(capsys):
    assert main(["targets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    cpu = next(r for r in rows if r["name"] == "cpu")
    assert cpu["family"] == "cpu" and cpu["execution"] == "executes"
    assert all({"name", "family", "vendor", "execution"} <= set(r) for r in rows)
    from anychip.compiler.registry import backends

    assert {r["family"] for r in rows} <= set(backends())   # every row's family is installed


def test_compile_run_roundtrip_with_npz(model_path, tmp_path, capsys):
    art = tmp_path / "lin.anychip"
    assert main(["compile", str(model_path), "--target", "cpu", "-o", str(art)]) == 0
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", **{"in/x": x})
    out = tmp_path / "out.npz"
    assert main(["run", str(art), "--inputs", str(tmp_path / "in.npz"), "-o", str(out)]) == 0
    assert "executed on cpu" in capsys.readouterr().out
    with np.load(out) as data:
        assert data.files == ["out/y"]
        y = data["out/y"]
    import onnxruntime as ort

    ref = ort.InferenceSession(str(model_path)).run(None, {"in/x": x})[0]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    # an existing output is not overwritten without --force
    before = out.read_bytes()
    assert main(["run", str(art), "--inputs", str(tmp_path / "in.npz"), "-o", str(out)]) == 2
    assert "already exists" in _err_line(capsys)
    assert out.read_bytes() == before


def test_verify_passes_with_exit_0(model_path, capsys):
    assert main(["verify", str(model_path), "--target", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["how"] == "executed" and report["precision"] == "fp32"
    assert report["outputs"][0]["rtol"] == 1e-4 and report["max_abs"] < 1e-5


def test_verify_failure_exits_1(model_path, capsys, monkeypatch):
    import anychip.compiler.verify as verify

    real = verify.reference_outputs
    monkeypatch.setattr(verify, "reference_outputs",
                        lambda m, f, label, digest=None: [o + 0.5 for o in real(m, f, label)])
    assert main(["verify", str(model_path), "--target", "cpu"]) == 1
    assert capsys.readouterr().out.startswith("FAIL")


def test_reduced_precision_failure_says_what_to_try_next(model_path, capsys):
    """ascend-910b computes in fp16 by default; a zero tolerance makes it fail."""
    assert main(["verify", str(model_path), "--target", "ascend-910b", "--rtol", "0",
                 "--atol", "0"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAIL") and "fp16" in out[0]
    assert out[1].startswith("next: 'anychip compare") and "--precision fp32" in out[1]


@pytest.mark.parametrize("argv_tail, needle", [
    (["--shape", "in/x=3x8"], None),
    (["--target", "no-such-chip"], "unknown target 'no-such-chip'"),
    (["--shape", "bogus"], "expected NAME=1x3x224x224"),
])
def test_bad_compile_arguments(model_path, tmp_path, capsys, argv_tail, needle):
    code = main(["compile", str(model_path), "-o", str(tmp_path / "o.anychip"), *argv_tail])
    if needle is None:  # a rank-consistent --shape is accepted
        assert code == 0
        return
    assert code == 2
    assert needle in _err_line(capsys)
    assert not (tmp_path / "o.anychip").exists(), "a failed compile left an artifact behind"


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage" * 50, b'{"json": true}'])
def test_bad_model_files_exit_2(tmp_path, capsys, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    assert main(["compile", str(path), "-o", str(tmp_path / "o.anychip")]) == 2
    err = _err_line(capsys)
    assert str(path) in err and "not a valid ONNX model" in err
    assert not (tmp_path / "o.anychip").exists()


def test_names_with_control_characters_stay_on_one_line(tmp_path, capsys):
    """A corrupted file's op type with a newline in it (found by the fuzzer: a bit flip made
    'Conv' 'Conv*\npads@@@@') is shown escaped, so the error stays one line."""
    model = make_linear_model("x", "y")
    model.graph.node[0].op_type = "Conv*\npads"
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "-o", str(tmp_path / "o.anychip")]) == 2
    assert "unknown operators: Conv*\\npads" in _err_line(capsys)


def test_a_model_the_reference_refuses_too_is_bad_input_in_one_line(tmp_path):
    """A Conv over an input of width 0 (fuzzer): TVM's legalization raises ('negative output
    shape') and ONNX Runtime refuses the model too, so it is exit 2, not an internal error,
    and the C++ BlockBuilder's warning about the pass it left open is not a second line."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 0])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 0])], [w])
    path = tmp_path / "empty.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    proc = subprocess.run([sys.executable, "-m", "anychip.compiler.cli.main", "compile",
                           str(path), "-o", str(tmp_path / "o.anychip")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ANYCHIP_NO_CACHE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "ONNX Runtime (the reference) cannot run this model" in proc.stderr
    assert "negative output shape" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.anychip").exists()


def test_wrong_runtime_input_exits_2(model_path, tmp_path, capsys):
    art = tmp_path / "lin.anychip"
    assert main(["compile", str(model_path), "-o", str(art)]) == 0
    np.savez(tmp_path / "bad.npz", **{"in/x": np.zeros((2, 8), np.float64)})
    assert main(["run", str(art), "--inputs", str(tmp_path / "bad.npz")]) == 2
    assert "must be float32[2x8], got float64[2x8]" in _err_line(capsys)


def test_corrupted_artifact_exits_2(model_path, tmp_path, capsys):
    art = tmp_path / "lin.anychip"
    assert main(["compile", str(model_path), "-o", str(art)]) == 0
    lib = art / "lib.so"
    data = bytearray(lib.read_bytes())
    data[100] ^= 0xFF
    lib.write_bytes(bytes(data))
    assert main(["run", str(art)]) == 2
    assert "sha256" in _err_line(capsys)


def test_console_script_reports_without_traceback(tmp_path):
    """The installed `anychip` entry point itself: exit code and a single stderr line."""
    exe = os.path.join(os.path.dirname(sys.executable), "anychip")
    proc = subprocess.run([exe, "compile", str(tmp_path / "missing.onnx")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr
