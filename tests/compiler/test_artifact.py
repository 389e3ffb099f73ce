"""Artifacts: save/load round trip, atomic publish, and refusal of anything tampered with."""

from __future__ import annotations

import json

import numpy as np
import pytest

import anychip
from anychip.compiler.errors import AnychipError


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from tests.conftest import make_linear_model

    path = tmp_path_factory.mktemp("m") / "lin.onnx"
    import onnx

    onnx.save(make_linear_model("in/x", "out/y"), str(path))
    return anychip.compile(str(path), target="cpu")


def test_round_trip_gives_identical_outputs(compiled, tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    before = compiled.run({"in/x": x})["out/y"]
    saved = compiled.save(tmp_path / "lin.anychip")
    loaded = anychip.load(tmp_path / "lin.anychip")
    after = loaded.run({"in_x": x})["out/y"]  # the safe name is accepted too
    np.testing.assert_array_equal(before, after)
    manifest = saved.manifest
    assert manifest["inputs"][0]["name"] == "in/x" and manifest["inputs"][0]["safe_name"] == "in_x"
    assert set(manifest["files"]) >= {"lib.so", "report.json"}
    assert manifest["versions"]["tvm"].startswith("0.27")
    w, b = _weights()
    np.testing.assert_allclose(after, np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-5)


def _weights():
    from onnx import numpy_helper

    from tests.conftest import make_linear_model

    init = make_linear_model().graph.initializer
    return numpy_helper.to_array(init[0]), numpy_helper.to_array(init[1])


def test_existing_output_is_refused_without_force(compiled, tmp_path):
    dest = tmp_path / "a.anychip"
    compiled.save(dest)
    marker = dest / "manifest.json"
    old = marker.read_bytes()
    with pytest.raises(AnychipError, match="already exists"):
        compiled.save(dest)
    assert marker.read_bytes() == old
    compiled.save(dest, force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dirs left behind"


def test_symlink_output_is_refused(compiled, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link.anychip"
    link.symlink_to(target)
    with pytest.raises(AnychipError, match="symbolic link"):
        compiled.save(link)


@pytest.mark.parametrize("tamper, match", [
    (lambda d: _flip_byte(d / "lib.so"), "sha256"),
    (lambda d: (d / "lib.so").unlink(), "missing"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "corrupted"),
    (lambda d: _edit_manifest(d, lambda m: m["versions"].update(tvm="0.1")), "recompile"),
    (lambda d: _edit_manifest(d, lambda m: m.update(format_version=99)), "format"),
    (lambda d: _edit_manifest(d, lambda m: m["files"].update({"../x": "0"})), "unsafe"),
])
def test_tampered_artifact_is_refused_before_loading(compiled, tmp_path, tamper, match):
    dest = tmp_path / "t.anychip"
    compiled.save(dest)
    tamper(dest)
    with pytest.raises(AnychipError, match=match) as err:
        anychip.load(dest)
    assert "\n" not in str(err.value)


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(directory, edit):
    manifest = json.loads((directory / "manifest.json").read_text())
    edit(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_wrong_input_shape_or_dtype_is_a_clear_error(compiled):
    with pytest.raises(AnychipError, match=r"must be float32\[2x8\], got float32\[3x8\]"):
        compiled.run({"in/x": np.zeros((3, 8), np.float32)})
    with pytest.raises(AnychipError, match=r"got float64\[2x8\]"):
        compiled.run({"in/x": np.zeros((2, 8), np.float64)})
    with pytest.raises(AnychipError, match="unknown input 'bogus'"):
        compiled.run({"bogus": np.zeros((2, 8), np.float32)})
