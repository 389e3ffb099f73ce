"""`anychip bench --train`: one compiled train step timed against torch eager in the same run
(compiler/bench_train.py). Few repetitions: the test checks the report, not the speed."""

from __future__ import annotations

import json
import math

import pytest
from anychip.compiler.cli.main import main


@pytest.mark.slow
def test_bench_train_json_reports_both_engines_with_finite_ratios(capsys):
    code = main(["bench", "zoo:mlp", "--train", "--against", "torch", "--warmup", "1",
                 "--repeat", "3", "--optimizer", "sgd", "--lr", "0.01", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)            # --json prints only the JSON
    assert data["model"] == "zoo:mlp train step" and data["target"] == "cpu"
    assert data["how"] == "executed" and data["repeat"] == 3 and data["threads"] >= 1
    assert set(data["engines"]) == {"torch"} and set(data["ratio"]) == {"torch"}
    for lat in (data["latency_ms"], data["engines"]["torch"]):
        assert 0 < lat["min"] <= lat["median"] <= lat["max"]
    ratio = data["ratio"]["torch"]
    assert math.isfinite(ratio) and ratio > 0
    assert ratio == data["latency_ms"]["median"] / data["engines"]["torch"]["median"]
    assert "cross_entropy, SGD (lr 0.01), batch [4, 64], fp32" in data["notes"]["step"]
    assert data["machine"]["cores_usable"] >= 1 and "load_avg_before" in data["machine"]


def test_bench_train_refuses_an_onnx_model_and_inference_engines(tmp_path, capsys):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    assert main(["bench", str(onnx_file), "--train", "--against", "torch"]) == 2
    assert "needs a torch model" in capsys.readouterr().err
    assert main(["bench", "zoo:mlp", "--train", "--against", "ort"]) == 2
    assert "torch, torch.compile" in capsys.readouterr().err
