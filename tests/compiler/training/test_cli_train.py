"""`anychip train`: trains from data.npz, shows the loss, writes the parameters; exit codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anychip.compiler.cli.main import main

from .test_backends import fake_targets  # noqa: F401 - fixture
from .torch_models import make_model


@pytest.fixture
def mlp_onnx(tmp_path):
    model, _, _ = make_model("mlp")
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(model, (torch.zeros(1, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["features"], output_names=["logits"])
    return path


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 16)).astype(np.float64)   # float64: cast for the model
    y = rng.integers(0, 5, 40)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return path


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_trains_shows_loss_and_writes_params(mlp_onnx, data, tmp_path, capsys):
    out = tmp_path / "params.npz"
    code = main(["train", str(mlp_onnx), "--data", str(data), "--epochs", "2",
                 "--batch-size", "16", "--optimizer", "adam", "--lr", "0.01", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "epoch 2/2: 2 batches, mean loss" in captured.err
    assert "trained 4 steps on cpu (executed)" in captured.out     # 40 // 16 = 2 per epoch
    with np.load(out) as params:
        assert sorted(params.files) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight",
                                        "head.bias", "head.weight"]
    assert main(["train", str(mlp_onnx), "--data", str(data), "-o", str(out)]) == 2
    assert "already exists" in _one_line(capsys)


def test_bad_data_is_one_line_exit_2(mlp_onnx, tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((4, 16), np.float32))
    assert main(["train", str(mlp_onnx), "--data", str(path)]) == 2
    assert "no array 'y'" in _one_line(capsys)


def test_compile_only_target_exits_3(fake_targets, mlp_onnx, data, capsys):  # noqa: F811
    assert main(["train", str(mlp_onnx), "--target", "dev-chip", "--data", str(data),
                 "-b", "8"]) == 3
    assert "cannot run here: no test device" in _one_line(capsys)


def test_zoo_model_with_sgd_momentum(tmp_path, capsys):
    rng = np.random.default_rng(1)
    path = tmp_path / "zoo.npz"
    np.savez(path, x=rng.standard_normal((24, 64)).astype(np.float32), y=rng.integers(0, 10, 24))
    code = main(["train", "zoo:mlp", "--data", str(path), "-b", "8", "--momentum", "0.9",
                 "--lr", "0.05", "--no-shuffle"])
    out = capsys.readouterr().out
    assert code == 0 and "trained 3 steps on cpu (executed)" in out and "SGD" in out


def test_output_format_is_checked_before_training(mlp_onnx, data, tmp_path, capsys):
    try:
        import safetensors  # noqa: F401
    except ImportError:
        assert main(["train", str(mlp_onnx), "--data", str(data),
                     "-o", str(tmp_path / "p.safetensors")]) == 2
        assert "needs the 'safetensors' package" in _one_line(capsys)
    assert main(["train", str(mlp_onnx), "--data", str(data), "-o", str(tmp_path / "p.pt")]) == 2
    assert "written as .npz or .safetensors" in _one_line(capsys)


def test_loop_options_log_checkpoint_and_resume(mlp_onnx, data, tmp_path, capsys):
    """adamw + clipping + cosine warm-up + accumulation; the log has a row per batch; a run
    with the same options resumed from the first run's checkpoint continues from its update
    count (with other options, e.g. --epochs and so the cosine's length, it is refused)."""
    import csv

    log, ck = tmp_path / "loss.csv", tmp_path / "ck.safetensors"
    common = ["train", str(mlp_onnx), "--data", str(data), "--batch-size", "8",
              "--optimizer", "adamw", "--lr", "0.01", "--clip-grad-norm", "1.0",
              "--schedule", "cosine", "--warmup-steps", "1", "--accumulate", "2",
              "--no-shuffle", "--epochs", "2"]
    code = main([*common, "--eval-data", str(data), "--log", str(log),
                 "--checkpoint", str(ck)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "trained 5 steps on cpu" in captured.out   # 40 // 8 = 5 batches x 2 epochs, / 2
    with open(log) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["kind"] for r in rows].count("train") == 10
    assert [r["kind"] for r in rows].count("eval") == 2
    assert float(rows[0]["lr"]) == 0.0 and float(rows[2]["lr"]) > 0.0
    assert ck.exists()
    code = main([*common, "--resume", str(ck)])          # the same setup, schedule included
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resumed from" in captured.out and "at update 5" in captured.out


@pytest.mark.slow
def test_bf16_mixed_precision_states_the_dtypes(mlp_onnx, data, capsys):
    code = main(["train", str(mlp_onnx), "--data", str(data), "--batch-size", "8",
                 "--optimizer", "adamw", "--precision", "bf16"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "mixed precision: forward and backward in bfloat16 (bfloat16: " in captured.out
    assert "master weights, optimizer state and loss in float32" in captured.out
    assert "bf16, loss cross_entropy" in captured.out and "trained 5 steps" in captured.out
