"""A manifest is validated by a schema and cross-checked before use; nothing inside an artifact
may be a link (issue 19, items 5 and 6). Every bad case is one line, exit 2."""

from __future__ import annotations

import json
import os
import shutil

import anychip
import pytest
from anychip.compiler.artifact import load_artifact
from anychip.compiler.cli.main import main
from anychip.compiler.manifest_schema import validate_manifest

from tests.conftest import make_linear_model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "lin.anychip"
    anychip.compile(make_linear_model()).save(path)
    return path


def _edit(manifest: dict, case: str) -> None:
    if case.startswith("del:"):
        keys = case[4:].split(".")
        node = manifest
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    elif case == "files-list":
        manifest["files"] = list(manifest["files"])
    elif case == "threads-abc":
        manifest["runtime"]["num_threads"] = "abc"
    elif case == "target-h100":
        manifest["target"] = "nvidia-h100"
    elif case == "family-cuda":
        manifest["family"] = "cuda"
    elif case == "shape-negative":
        manifest["inputs"][0]["shape"] = [-1, 8]
    elif case == "device-cuda":     # mcpu no longer required by the schema: the backend checks
        manifest["runtime"]["device"] = "cuda"
        del manifest["runtime"]["mcpu"]
    elif case == "safe-name-code":
        manifest["inputs"][0]["safe_name"] = "x; rm -rf /"


CASES = ["del:inputs", "del:outputs", "del:family", "del:profile", "del:runtime",
         "del:runtime.mcpu", "del:files", "files-list", "threads-abc", "target-h100",
         "family-cuda", "shape-negative", "safe-name-code", "device-cuda"]


@pytest.mark.parametrize("case", CASES)
def test_edited_manifest_is_refused_one_line(case, built, tmp_path, capsys):
    art = tmp_path / "a.anychip"
    shutil.copytree(built, art)
    manifest = json.loads((art / "manifest.json").read_text())
    _edit(manifest, case)
    (art / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", str(art)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and "internal error" not in err, err
    assert str(art) in err


def test_unmodified_artifact_still_loads(built):
    art = load_artifact(built)
    validate_manifest(art.manifest, "x")
    assert set(art.run()) == {"y"}


def test_non_utf8_manifest_is_refused(built, tmp_path, capsys):
    art = tmp_path / "a.anychip"
    shutil.copytree(built, art)
    data = (art / "manifest.json").read_bytes().replace(b'"cpu"', b'"c\xffu"', 1)
    (art / "manifest.json").write_bytes(data)
    assert main(["run", str(art)]) == 2
    assert "corrupted" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["device", "report.json", "extra"])
def test_symlinks_inside_an_artifact_are_refused(where, built, tmp_path, capsys):
    art = tmp_path / "a.anychip"
    shutil.copytree(built, art)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kernels.cubin").write_text("not ours")
    if where == "report.json":
        target = outside / "report.json"
        shutil.copy(art / "report.json", target)     # same bytes: the hash alone would pass
        (art / "report.json").unlink()
        os.symlink(target, art / "report.json")
    else:
        os.symlink(outside, art / where)
    assert main(["run", str(art)]) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and "Traceback" not in err


def test_a_fifo_inside_an_artifact_is_refused(built, tmp_path, capsys):
    art = tmp_path / "a.anychip"
    shutil.copytree(built, art)
    os.mkfifo(art / "pipe")
    assert main(["run", str(art)]) == 2
    assert "not a regular file" in capsys.readouterr().err
