"""`anychip scan` on the command line: exit codes as a CI gate, output files, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from anychip.compiler.cli.main import main

MIXED = Path(__file__).parent / "fixtures" / "mixed"


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_exit_codes_gate_on_blocking_findings(tmp_path, capsys):
    (tmp_path / "ok.py").write_text("import torch\ntorch.cuda.synchronize()\n")
    assert main(["scan", str(tmp_path)]) == 0  # port only
    assert "1 findings: 0 blocks, 1 port, 0 info" in capsys.readouterr().out
    (tmp_path / "k.cu").write_text("__global__ void k() {}\n")
    assert main(["scan", str(tmp_path)]) == 1
    capsys.readouterr()
    assert main(["scan", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in _err_line(capsys)
    assert main(["scan", str(tmp_path), "--target", "nope"]) == 2
    assert "unknown target 'nope'" in _err_line(capsys)


def test_target_changes_the_gate(tmp_path, capsys):
    (tmp_path / "m.py").write_text("import torch\nx = torch.ones(2, dtype=torch.bfloat16)\n")
    assert main(["scan", str(tmp_path), "--target", "ascend-910b"]) == 0
    assert "0 finding(s) block ascend-910b" in capsys.readouterr().out
    assert main(["scan", str(tmp_path), "--target", "ascend-910", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["blocking_by_target"] == {"ascend-910": 1}
    assert data["findings"][0]["target_note"].startswith("ascend-910 has no bfloat16")


def test_sarif_and_markdown_files(tmp_path, capsys):
    sarif, md = tmp_path / "scan.sarif", tmp_path / "scan.md"
    assert main(["scan", str(MIXED), "--sarif", str(sarif), "--markdown", str(md)]) == 1
    out = capsys.readouterr().out
    data = json.loads(sarif.read_text())
    assert data["version"] == "2.1.0" and data["runs"][0]["results"]
    assert md.read_text().startswith("# CUDA lock-in")
    assert "findings:" in out
    # an existing output file is not overwritten without --force
    assert main(["scan", str(MIXED), "--sarif", str(sarif)]) == 2
    assert "already exists; pass --force" in _err_line(capsys)
    assert main(["scan", str(MIXED), "--sarif", str(sarif), "--force"]) == 1
