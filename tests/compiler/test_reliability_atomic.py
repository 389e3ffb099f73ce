"""Atomic replacement that never deletes user data (issue 19, item 4): --force swaps a folder
in with one atomic exchange, refuses folders that are not anychip's and '.'/'..', leftovers of
killed writers are cleaned (only ours, only when their writer is dead), and a failed write
(here a real file-size limit, as a full disk) is exit 2 with the old artifact intact."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import pytest
from anychip.compiler.artifact import STAGING_PREFIX, clean_stale_staging, new_staging_dir
from anychip.compiler.atomic import clean_leftovers, exchange, publish_dir
from anychip.compiler.cli.main import main
from anychip.compiler.errors import AnychipError

from tests.conftest import make_linear_model

ANYCHIP = os.path.join(os.path.dirname(sys.executable), "anychip")


def _fill(text: str):
    def fill(tmp: Path) -> None:
        (tmp / "manifest.json").write_text(json.dumps({"v": text}))
    return fill


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("A")
    (b / "f").write_text("B")
    if not exchange(a, b):
        pytest.skip("this file system has no renameat2 RENAME_EXCHANGE")
    assert (a / "f").read_text() == "B" and (b / "f").read_text() == "A"


def test_force_replaces_an_artifact_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "m.anychip"
    publish_dir(out, _fill("old"))
    publish_dir(out, _fill("new"), force=True)
    assert json.loads((out / "manifest.json").read_text()) == {"v": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.anychip"]


def test_force_refuses_a_folder_that_is_not_an_artifact(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    with pytest.raises(AnychipError, match="not an anychip artifact"):
        publish_dir(thesis, _fill("x"), force=True)
    assert (thesis / "chapter1.tex").read_text() == "years of work"


@pytest.mark.parametrize("out", [".", "..", "./", "sub/.."])
def test_cli_refuses_dot_outputs_before_compiling(out, tmp_path, monkeypatch, capsys):
    model = tmp_path / "lin.onnx"
    onnx.save(make_linear_model(), str(model))
    (tmp_path / "sub").mkdir()
    (tmp_path / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert main(["compile", str(model), "-o", out, "--force"]) == 2
    assert "refusing" in _err_line(capsys)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_killed_writer_leftovers_are_cleaned_or_restored(tmp_path):
    out = tmp_path / "m.anychip"
    publish_dir(out, _fill("old"))
    dead, alive = _dead_pid(), os.getpid()
    stale_tmp = tmp_path / f".m.anychip.tmp-{dead}-0123abcd"
    live_tmp = tmp_path / f".m.anychip.tmp-{alive}-0123abcd"
    other = tmp_path / ".m.anychip.tmp-notours"
    for p in (stale_tmp, live_tmp, other):
        p.mkdir()
    assert clean_leftovers(out) == [stale_tmp]
    assert live_tmp.exists() and other.exists() and not stale_tmp.exists()
    # the fallback path died between "old aside" and "new in": the old one comes back
    aside = tmp_path / f".m.anychip.old-{dead}-89abcdef"
    os.rename(out, aside)
    clean_leftovers(out)
    assert json.loads((out / "manifest.json").read_text()) == {"v": "old"}


def test_kill_during_publish_keeps_the_old_artifact(tmp_path):
    out = tmp_path / "m.anychip"
    publish_dir(out, _fill("old"))
    code = ("import sys, time; from pathlib import Path; "
            "from anychip.compiler.atomic import publish_dir; "
            "publish_dir(Path(sys.argv[1]), lambda t: (Path(t, 'big').write_bytes(b'x' * 1000), "
            "print('filling', flush=True), time.sleep(60)), force=True)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "filling"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "manifest.json").read_text()) == {"v": "old"}
    assert any(p.name.startswith(".m.anychip.tmp-") for p in tmp_path.iterdir())
    publish_dir(out, _fill("new"), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.anychip"]


def test_stale_build_folders_of_dead_compiles_are_removed():
    dead = _dead_pid()
    stale = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{dead}-"))
    foreign = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}x"))
    mine = new_staging_dir()   # a new compile cleans the dead one's folder
    try:
        assert not stale.exists() and mine.exists() and foreign.exists()
        assert clean_stale_staging() == []     # a live compile's folder is kept
    finally:
        for p in (mine, foreign):
            p.rmdir()


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # EFBIG instead of a kill, as ENOSPC
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_full_disk_on_output_is_exit_2_and_keeps_the_old_artifact(tmp_path):
    out = tmp_path / "lin.anychip"
    code = ("import resource, signal, sys, onnx, anychip\n"
            "from anychip.compiler.errors import AnychipError\n"
            "from tests.conftest import make_linear_model\n"
            "art = anychip.compile(make_linear_model())\n"
            "art.save(sys.argv[1])\n"
            "before = open(sys.argv[1] + '/manifest.json').read()\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "try:\n"
            "    art.save(sys.argv[1], force=True)\n"
            "except AnychipError as exc:\n"
            "    print(exc)\n"
            "    sys.exit(exc.exit_code if open(sys.argv[1] + '/manifest.json').read() == before"
            " else 9)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                          check=False,
                          cwd=Path(__file__).parents[2], env={**os.environ, "ANYCHIP_NO_CACHE": "1"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot write" in proc.stdout and proc.stdout.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lin.anychip"]


def test_full_disk_during_the_build_is_exit_2_one_line(tmp_path):
    model = tmp_path / "lin.onnx"
    onnx.save(make_linear_model(), str(model))
    proc = subprocess.run([ANYCHIP, "compile", str(model), "-o", str(tmp_path / "o.anychip")], check=False,
                          env={**os.environ, "ANYCHIP_NO_CACHE": "1"}, capture_output=True,
                          text=True, preexec_fn=_limit_file_size)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert err.count("\n") == 0 and "cannot write" in err and "Traceback" not in err, err
    assert not (tmp_path / "o.anychip").exists()


def test_full_disk_after_a_verify_in_the_same_process_is_exit_2_not_a_hang(tmp_path):
    """A matrix worker verifies (ONNX Runtime's reference runs) and then compiles the next
    target: LLVM's exit on the full disk used to hang the export child in ORT's destructors."""
    code = ("import resource, signal, sys, anychip\n"
            "from anychip.compiler.errors import AnychipError\n"
            "from tests.conftest import make_linear_model\n"
            "anychip.verify(make_linear_model(), target='cpu')\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "try:\n"
            "    anychip.compile(make_linear_model(out_name='out'), target='cpu')\n"
            "except AnychipError as exc:\n"
            "    print(exc)\n"
            "    sys.exit(exc.exit_code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120, cwd=Path(__file__).parents[2],
                          env={**os.environ, "ANYCHIP_NO_CACHE": "1"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot write" in proc.stdout and proc.stdout.count("\n") == 1, proc.stdout
