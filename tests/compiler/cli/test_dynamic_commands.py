"""compare, bench and matrix of a model with a symbolic batch (docs/dynamic-shapes.md): each
compiles once with the symbol, runs at stated shapes and says which; --at out of the bounds is
one line, exit 2."""

from __future__ import annotations

import json

import onnx
import pytest

from anychip.compiler.cli.main import main
from tests.compiler.test_dynamic_shapes import conv_batch_model


@pytest.fixture(scope="module")
def dyn_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("dyn") / "dyn.onnx"
    onnx.save(conv_batch_model(), str(path))
    return str(path)


def test_compare_runs_a_symbolic_model_at_its_lower_bound(dyn_path, capsys):
    assert main(["compare", dyn_path, "--dim", "batch=2..8"]) == 0
    assert "within tolerance on cpu (executed at batch=2)" in capsys.readouterr().out


def test_compare_at_picks_the_size_and_json_states_it(dyn_path, capsys):
    assert main(["compare", dyn_path, "--dim", "batch=2..8", "--at", "batch=7", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sizes"] == {"batch": 7} and out["how"] == "executed at batch=7"
    assert len(out["nodes"]) == 5 and all(n["passed"] for n in out["nodes"])


def test_compare_at_outside_the_bounds_is_one_line_exit_2(dyn_path, capsys):
    assert main(["compare", dyn_path, "--dim", "batch=2..8", "--at", "batch=9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'batch' must be within 2..8" in err
    assert main(["compare", dyn_path, "--at", "seq=3"]) == 2
    assert "not a symbol of the model's inputs (symbols: batch)" in capsys.readouterr().err


def test_bench_times_a_symbolic_model_at_a_stated_shape(dyn_path, capsys):
    from anychip.compiler.bench import count_flops
    from anychip.compiler.frontend import load_model

    args = ["bench", dyn_path, "--dim", "batch=2..8", "--against", "ort", "--warmup", "0",
            "--repeat", "1", "--no-peak"]
    assert main(args + ["--at", "batch=4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sizes"] == {"batch": 4} and out["engines"]["ort"] is not None
    static = load_model(dyn_path, None, {"x": (4, 4, 8, 8)}).original
    assert out["gflop"] == pytest.approx(count_flops(static) / 1e9) and out["gflop"] > 0
    assert main(args) == 0
    assert f"{dyn_path} on cpu at batch=2:" in capsys.readouterr().out


def test_matrix_verifies_a_symbolic_model_at_each_shape(dyn_path, capsys):
    assert main(["matrix", dyn_path, "--targets", "cpu", "--dim", "batch=1..8", "--json"]) == 0
    (cell,) = json.loads(capsys.readouterr().out)
    assert cell["passed"] and cell["status"] == "executed"
    assert cell["sizes"] == [{"batch": 1}, {"batch": 5}, {"batch": 8}]
    assert main(["matrix", dyn_path, "--targets", "cpu", "--dim", "batch=1..8"]) == 0
    assert "at batch=1, 5, 8" in capsys.readouterr().out
