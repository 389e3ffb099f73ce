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
