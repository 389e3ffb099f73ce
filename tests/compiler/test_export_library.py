"""compiler/export_library.py: lib.so is written in a forked child, so that LLVM exiting the
process on a failed write (it does, on a full disk) becomes an OSError here."""

from __future__ import annotations

import os

import pytest

from anychip.compiler.export_library import export_library


class _Writes:
    def export_library(self, path):
        with open(path, "w") as fh:
            fh.write("lib")


class _ExitsLikeLlvm:
    def export_library(self, path):
        os.write(2, b"LLVM ERROR: IO failure on output stream: No space left on device\n")
        os._exit(1)


class _Raises:
    def export_library(self, path):
        raise RuntimeError("linker: cannot open output file")


def test_a_successful_export_writes_the_file(tmp_path):
    export_library(_Writes(), str(tmp_path / "lib.so"))
    assert (tmp_path / "lib.so").read_text() == "lib"


@pytest.mark.parametrize("fake, message", [
    (_ExitsLikeLlvm(), "IO failure on output stream: No space left on device"),
    (_Raises(), "RuntimeError: linker: cannot open output file")])
def test_a_failed_export_is_an_oserror_and_this_process_lives(tmp_path, fake, message):
    with pytest.raises(OSError) as info:
        export_library(fake, str(tmp_path / "lib.so"))
    assert str(info.value) == message


_AFTER_ONNXRUNTIME = """
import ctypes, os, sys
import numpy as np
import onnxruntime as ort
from tests.conftest import make_linear_model
from anychip.compiler.export_library import export_library

session = ort.InferenceSession(make_linear_model().SerializeToString(),
                               providers=["CPUExecutionProvider"])
session.run(None, {"x": np.ones((2, 8), np.float32)})   # its thread pool now waits


class ExitsThroughLibc:   # what LLVM's report_fatal_error does: exit(1), handlers and all
    def export_library(self, path):
        os.write(2, b"LLVM ERROR: IO failure on output stream: No space left on device\\n")
        ctypes.CDLL(None).exit(1)


try:
    export_library(ExitsThroughLibc(), sys.argv[1])
except OSError as exc:
    print(exc)
"""


def test_llvm_exiting_after_onnxruntime_ran_is_an_oserror_not_a_hang(tmp_path):
    """The forked child inherits ONNX Runtime's thread-pool state without its threads: exit's
    handlers (ORT's static destructors) waited forever on a condition variable, and so did the
    parent on the child (a matrix hung on a full disk). The child's exit now ends it at once."""
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-c", _AFTER_ONNXRUNTIME, str(tmp_path / "lib.so")],
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "IO failure on output stream: No space left on device"
