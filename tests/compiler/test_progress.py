"""Progress display (compiler/progress.py): silent off a terminal and with --quiet/--json, a
status line and bars on a terminal; native log lines summarised, not dumped."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from anychip.compiler import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def tty(monkeypatch):
    """A terminal as stderr. Patched when the test body asks for it: pytest's own capture
    sets sys.stderr again between a fixture's setup and the test's call."""
    monkeypatch.delenv("ANYCHIP_QUIET", raising=False)
    progress.configure(quiet=False)
    stream = _Tty()

    def attach():
        monkeypatch.setattr("sys.stderr", stream)
        return stream

    yield attach
    progress.configure(quiet=False)


def test_silent_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    progress.configure(quiet=False)
    assert not progress.enabled()          # pytest's capture is not a TTY
    with progress.stage("compile"):
        assert list(progress.bar([1, 2, 3], "cells")) == [1, 2, 3]
    assert capsys.readouterr().err == ""


def test_quiet_and_json_silence_a_terminal(tty):
    tty = tty()
    assert progress.enabled()
    progress.configure(quiet=True)
    assert not progress.enabled() and progress.silenced()
    with progress.stage("compile"):
        list(progress.bar(range(3), "cells"))
    assert tty.getvalue() == ""


def test_terminal_shows_nested_stages_and_counts(tty):
    tty = tty()
    with progress.stage("compile m for cpu"):
        with progress.stage("lower"):
            shown = tty.getvalue()
        assert "compile m for cpu: lower" in shown
    assert list(progress.bar(range(4), "matrix", unit="cell")) == [0, 1, 2, 3]
    assert "matrix:" in tty.getvalue() and "/4 " in tty.getvalue()   # counted, of 4


def test_summarise_counts_repeats_of_one_native_warning():
    log = "\n".join(
        [f"[12:00:0{i}] /src/tvm/target/rocm.cc:{40 + i}: Cannot get maximum number of threads "
         f"for AMD codegen" for i in range(7)] + ["[12:00:09] /src/x.cc:1: other 0xdeadbeef"])
    summary = progress.summarise(log)
    assert summary[0] == {"message": "Cannot get maximum number of threads for AMD codegen",
                          "count": 7}
    assert summary[1] == {"message": "other 0x…", "count": 1}


def test_native_messages_are_captured_from_file_descriptor_2(capfd):
    found: list = []
    with progress.native_messages(found):
        for _ in range(3):
            os.write(2, b"[1:2:3] /a.cc:9: kernel noise\n")
    assert found == [{"message": "kernel noise", "count": 3}]
    assert "kernel noise" not in capfd.readouterr().err


def test_native_messages_come_back_when_the_block_fails(capfd):
    found: list = []
    with pytest.raises(RuntimeError), progress.native_messages(found):
        os.write(2, b"the reason it failed\n")
        raise RuntimeError("boom")
    assert found == [] and "the reason it failed" in capfd.readouterr().err


def test_float16_saturation_names_the_constant_instead_of_a_numpy_warning():
    import warnings

    from anychip.backends.npu.precision import _np_cast

    saturated: list = []
    mask = np.array([0.0, -1e9, 1.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # numpy's bare RuntimeWarning would raise
        out = _np_cast(mask, "float16", "attention_mask", saturated)
    assert np.isneginf(out[1]) and out[0] == 0
    assert saturated == [{"tensor": "attention_mask", "dtype": "float16", "values": 1,
                          "max_abs": 1e9}]
    _np_cast(np.array([1.0, 2.0], np.float32), "float16", "w", saturated)
    assert len(saturated) == 1


def test_quiet_is_accepted_before_and_after_the_command():
    from anychip.compiler.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["--quiet", "targets"]).quiet is True
    assert parser.parse_args(["targets", "--quiet"]).quiet is True
    assert parser.parse_args(["targets"]).quiet is False
