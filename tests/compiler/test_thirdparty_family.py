"""A family nobody in compiler/ knows works end to end: installed the way pip installs a
vendor's package (a dist-info whose entry_points.txt names the backend in the
`anychip.backends` group, on sys.path), with its own chip profile and options, it compiles,
runs, verifies, and shows in targets, analyze, matrix and --help."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import anychip
from anychip.compiler import registry
from anychip.compiler.cli.main import main
from anychip.compiler.errors import AnychipError
from tests.conftest import make_linear_model

TARGET = "toy-sim"


@pytest.fixture
def toy_installed(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "anychip_toy_family-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: anychip-toy-family\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[anychip.backends]\ntoy = tests.thirdparty_family:ToyBackend\n")
    monkeypatch.syspath_prepend(str(site))
    registry.backends.cache_clear()
    registry.profiles.cache_clear()
    yield
    monkeypatch.undo()
    registry.backends.cache_clear()
    registry.profiles.cache_clear()


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "lin.onnx"
    onnx.save(make_linear_model(), str(path))
    return path


def test_registered_through_the_entry_point_with_its_own_profile(toy_installed, capsys):
    assert "toy" in registry.backends()
    assert registry.get_profile(TARGET).family == "toy"
    assert main(["targets", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == TARGET)
    assert (row["family"], row["execution"]) == ("toy", "simulates")


def test_compile_run_verify_with_typed_options(toy_installed, model_path):
    art = anychip.compile(str(model_path), target=TARGET, lanes=8)
    assert art.report["toy"] == {"lanes": 8, "folded": True, "functions": art.report["toy"][
        "functions"]}
    assert list(art.report["steps_s"]) == ["prepare_onnx", "import", "lower", "build"]
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    out = art.run({"x": x})["y"]
    model = make_linear_model()
    w, b = (onnx.numpy_helper.to_array(t) for t in model.graph.initializer)
    np.testing.assert_allclose(out, np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-5)
    report = anychip.verify(str(model_path), target=TARGET)
    assert report.passed and report.how == "simulated"
    with pytest.raises(AnychipError, match=r"unknown option 'lane' for the 'toy' family "
                                           r"\(its options: fold_constants, lanes\)"):
        anychip.compile(str(model_path), target=TARGET, lane=8)


def test_cli_flags_analyze_and_matrix(toy_installed, model_path, tmp_path, capsys):
    assert main(["analyze", str(model_path), "--target", TARGET, "--lanes", "16",
                 "--fold-constants", "false"]) == 0
    text = capsys.readouterr().out
    assert "Toy chip" in text and "lanes 16, constants folded: False" in text
    md = tmp_path / "m.md"
    assert main(["matrix", str(model_path), "--targets", f"cpu,{TARGET}", "--markdown",
                 str(md)]) == 0
    assert TARGET in md.read_text()
    assert main(["compile", "--help"]) == 0
    assert "'toy' family options (targets: toy-sim)" in capsys.readouterr().out


def test_verify_verbose_prints_the_family_sections(toy_installed, model_path, capsys):
    """verify prints the family's own report sections (its `render` hook) with --verbose,
    without knowing the family; --json stays one JSON document."""
    assert main(["verify", str(model_path), "--target", TARGET, "--lanes", "4",
                 "--verbose"]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "Toy chip" in text and "lanes 4" in text
    assert "steps: prepare_onnx" in text
    assert main(["verify", str(model_path), "--target", TARGET, "--verbose", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and "analysis" not in doc
