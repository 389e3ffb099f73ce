"""--fix: the diff applies with git apply and patch, every rewritten file parses, and the
rewritten code no longer has the findings it fixed; --write edits atomically and only then."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest
from anychip.compiler.cli.main import main
from anychip.compiler.scan.fix import plan, plan_file
from anychip.compiler.scan.walk import scan_path

MIXED = Path(__file__).parent / "fixtures" / "mixed"
HELPER = 'DEVICE = torch.accelerator.current_accelerator() or torch.device("cpu")  # anychip scan --fix'
FIXED_RULES = {"cuda-synchronize", "cuda-amp-autocast", "cuda-amp-gradscaler", "amp-device-type"}


def _copy(tmp_path, name="tree") -> Path:
    dest = tmp_path / name
    shutil.copytree(MIXED, dest)
    return dest


def _check_rewrite(tree: Path, diff: str) -> None:
    """Apply `diff` to two copies (git apply, patch -p1); both must parse and agree."""
    for tool in ("git", "patch"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the diff cannot be applied here")
    applied = []
    for i, tool in enumerate((["git", "apply", "--whitespace=nowarn", "-"],
                              ["patch", "-p1", "--quiet"])):
        copy = tree.parent / f"{tree.name}-apply{i}"
        shutil.copytree(tree, copy)
        subprocess.run(tool, cwd=copy, input=diff, text=True, check=True)
        applied.append(copy)
    for rel in [p.relative_to(applied[0]) for p in applied[0].rglob("*.py")]:
        text = (applied[0] / rel).read_text()
        ast.parse(text)  # every rewritten file still parses
        assert text == (applied[1] / rel).read_text()


def test_fix_diff_applies_parses_and_removes_what_it_fixed(tmp_path, capsys):
    tree = _copy(tmp_path)
    assert main(["scan", str(tree), "--fix"]) == 1  # the scan still blocks (flash-attn...)
    captured = capsys.readouterr()
    diff = captured.out
    assert "6 rewrite(s) in 2 file(s)" in captured.err  # 1 in model.py, 5 in train.py
    assert diff.startswith("--- a/model.py\n+++ b/model.py\n") and "--- a/train.py\n" in diff
    _check_rewrite(tree, diff)
    fixed = tree.parent / "tree-apply0"
    after = scan_path(fixed)
    rules = [(f.path, f.rule) for f in after.findings]
    assert not any(rule in FIXED_RULES for _, rule in rules)
    assert ("train.py", "dot-cuda") not in rules and ("model.py", "dot-cuda") not in rules
    model = (fixed / "model.py").read_text()  # it imported only torch.nn: the helper adds torch
    assert "import torch\nDEVICE = " in model and "flash_attn_func(q.to(DEVICE), k, v)" in model
    text = (fixed / "train.py").read_text()
    assert "torch.amp.autocast(DEVICE.type, dtype=torch.float16)" in text
    assert "scaler = torch.amp.GradScaler(DEVICE.type)" in text
    assert "torch.accelerator.synchronize()" in text and "model.to(DEVICE)" in text
    assert 'torch.autocast(device_type=DEVICE.type, dtype=torch.float16)' in text
    assert text.count("DEVICE = torch.accelerator.current_accelerator()") == 1
    # the tree itself is untouched without --write
    assert (tree / "train.py").read_text() == (MIXED / "train.py").read_text()
    # a second run over the fixed tree has nothing left to rewrite (CUDAGraph still blocks)
    assert main(["scan", str(fixed / "train.py"), "--fix"]) == 1
    assert capsys.readouterr().out == ""


def test_write_edits_atomically_and_keeps_the_mode(tmp_path, capsys):
    tree = _copy(tmp_path)
    (tree / "train.py").chmod(0o750)
    assert main(["scan", str(tree), "--fix"]) == 1
    diff = capsys.readouterr().out
    _check_rewrite(tree, diff)
    assert main(["scan", str(tree), "--fix", "--write"]) == 1
    assert "rewrote 2 file(s) in place" in capsys.readouterr().err
    for name in ("train.py", "model.py"):
        assert (tree / name).read_text() == (tree.parent / "tree-apply0" / name).read_text()
    assert (tree / "train.py").stat().st_mode & 0o777 == 0o750
    assert not list(tree.glob(".*.tmp-*"))  # no temporary file left beside it


def test_write_needs_fix(tmp_path, capsys):
    assert main(["scan", str(_copy(tmp_path)), "--write"]) == 2
    assert "--write applies the rewrites of --fix" in capsys.readouterr().err


@pytest.mark.parametrize("source, expected", [
    # no final newline, no torch import: helper and import added, diff marks the missing newline
    ("x = y.cuda()", HELPER.replace("DEVICE", "import torch\nDEVICE", 1) + "\nx = y.to(DEVICE)"),
    # CRLF line endings are kept; the helper follows the docstring and imports
    ('"""doc"""\r\nimport torch\r\nx = y.cuda(non_blocking=True)\r\n',
     '"""doc"""\r\nimport torch\r\n' + HELPER + '\r\nx = y.to(DEVICE, non_blocking=True)\r\n'),
    # a name DEVICE already in use: the helper takes another name
    ("import torch\nDEVICE = 3\nz = w.cuda()\n",
     "import torch\nANYCHIP_" + HELPER + "\nDEVICE = 3\nz = w.to(ANYCHIP_DEVICE)\n"),
    # torch imported only after other code: the helper brings its own import
    ("import sys\nsys.path.insert(0, '.')\nimport torch\nm.cuda()\n",
     "import sys\nimport torch\n" + HELPER + "\nsys.path.insert(0, '.')\nimport torch\nm.to(DEVICE)\n"),
    # chained calls rewrite both; synchronize keeps its argument
    ("import torch\nm.cuda().cuda()\ntorch.cuda.synchronize(0)\n",
     "import torch\n" + HELPER + "\nm.to(DEVICE).to(DEVICE)\ntorch.accelerator.synchronize(0)\n"),
])
def test_rewrites_keep_the_file_valid(tmp_path, source, expected):
    new, _, note = plan_file("m.py", source)
    assert new == expected and note == ""
    ast.parse(new)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.py").write_bytes(source.encode())
    result = scan_path(tmp_path / "a")
    diff = plan(result).diff()
    tool = (["patch", "-p1", "--quiet", "--binary"] if shutil.which("patch")
            else ["git", "apply", "--whitespace=nowarn", "-"])
    subprocess.run(tool, cwd=tmp_path / "a", input=diff.encode(), check=True)
    assert (tmp_path / "a" / "m.py").read_bytes() == expected.encode()


@pytest.mark.parametrize("source", [
    "import torch\nx = y.cuda(1)\n",  # a device index: not a mechanical rewrite
    "import torch\nwith torch.cuda.amp.autocast(True):\n    pass\n",  # positional enabled
    "import numpy as torch\nx = y.cuda()\n",  # 'torch' is something else here
])
def test_unsafe_calls_are_left_alone(source):
    new, count, _ = plan_file("m.py", source)
    assert new is None and count == 0
