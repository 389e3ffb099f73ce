"""Walking a tree: bad files are reported and skipped, never fatal; links stay inside PATH."""

from __future__ import annotations

import os

import pytest
from anychip.compiler.errors import AnychipError
from anychip.compiler.scan import walk
from anychip.compiler.scan.walk import scan_path


def _tree(tmp_path):
    (tmp_path / "ok.py").write_text("import torch\ntorch.cuda.synchronize()\n")
    (tmp_path / "broken.py").write_text("def f(:\n    pass\n")
    (tmp_path / "latin1.py").write_bytes(b"# caf\xe9\nx = 1\n")
    (tmp_path / "nul.py").write_bytes(b"x = 1\x00\n")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.py").write_text("import torch\ntorch.cuda.synchronize()\n")
    os.symlink(outside / "secret.py", tmp_path / "link_out.py")
    os.symlink(outside, tmp_path / "linked_dir")
    os.symlink(tmp_path / "ok.py", tmp_path / "link_in.py")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "dep.py").write_text("import torch\ntorch.cuda.synchronize()\n")
    return tmp_path


def test_bad_files_are_skipped_with_reasons(tmp_path):
    result = scan_path(_tree(tmp_path))
    reasons = {s.path: s.reason for s in result.skipped}
    assert reasons["broken.py"].startswith("does not parse: ")
    assert "line 1" in reasons["broken.py"]
    assert reasons["latin1.py"] == "not UTF-8 (byte 5)"
    assert reasons["nul.py"].startswith("does not parse")
    assert reasons["link_out.py"] == "symbolic link out of the scanned folder: not followed"
    assert reasons["linked_dir"] == "symbolic link to a folder: not followed"
    # ok.py and the in-tree link to it are read; nothing from outside or from .venv
    assert (result.files, result.python_files, len(result.skipped)) == (2, 2, 5)
    assert sorted((f.path, f.rule) for f in result.findings) == [
        ("link_in.py", "cuda-synchronize"), ("ok.py", "cuda-synchronize")]


def test_huge_file_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(walk, "MAX_BYTES", 100)
    (tmp_path / "big.py").write_text("x = 1\n" * 50)
    result = scan_path(tmp_path)
    assert result.findings == []
    assert [s.path for s in result.skipped] == ["big.py"]
    assert result.skipped[0].reason.endswith("limit for a source file")


def test_missing_path_is_bad_input(tmp_path):
    with pytest.raises(AnychipError) as err:
        scan_path(tmp_path / "nope")
    assert err.value.exit_code == 2 and "no such file or folder" in str(err.value)


def test_single_file_and_parallel_agree(tmp_path):
    for i in range(30):
        (tmp_path / f"m{i}.py").write_text(f"import torch\nx = torch.ones({i}).cuda()\n")
    serial = scan_path(tmp_path, jobs=1)
    walk_parallel_from = walk.PARALLEL_FROM
    try:
        walk.PARALLEL_FROM = 10
        parallel = scan_path(tmp_path, jobs=2)
    finally:
        walk.PARALLEL_FROM = walk_parallel_from
    assert serial.findings == parallel.findings and len(serial.findings) == 30
    one = scan_path(tmp_path / "m3.py")
    assert [(f.path, f.line, f.rule) for f in one.findings] == [("m3.py", 2, "dot-cuda")]


def test_requirements_folder_and_pyproject(tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "runtime.txt").write_text("numpy\nxformers==0.0.28\n")
    (tmp_path / "requirements" / "notes.md").write_text("flash-attn\n")
    (tmp_path / "pyproject.toml").write_text("[project\nname = 1\n")  # does not parse
    result = scan_path(tmp_path)
    assert [(f.path, f.line, f.rule) for f in result.findings] == [
        ("requirements/runtime.txt", 2, "req-xformers")]
    assert [s.path for s in result.skipped] == ["pyproject.toml"]
    assert result.skipped[0].reason.startswith("does not parse: TOMLDecodeError")
