"""Publish files and folders atomically: write beside the destination, then rename.

Nothing already written is lost or half-written (reliability.md §2 cases 17 and 19): an
existing destination or a symlink is refused unless `force`, and a failed write leaves only
the old content.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import AnychipError


def _check_destination(dest: Path, force: bool) -> None:
    if dest.is_symlink():
        if not force:
            raise AnychipError(f"{dest}: is a symbolic link; refusing to write through it "
                               f"(remove it or pass --force to replace the link itself).")
    elif dest.exists() and not force:
        raise AnychipError(f"{dest}: already exists; pass --force to replace it.")
    if not dest.parent.exists():
        raise AnychipError(f"{dest}: folder '{dest.parent}' does not exist; create it first.")


def _temp_sibling(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_file(dest: str | Path, write: Callable[[Path], None], force: bool = False) -> Path:
    """Call write(tmp_path) and rename the result onto dest."""
    dest = Path(dest)
    _check_destination(dest, force)
    tmp = _temp_sibling(dest)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if dest.is_symlink():
            dest.unlink()
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def publish_dir(dest: str | Path, fill: Callable[[Path], None], force: bool = False) -> Path:
    """Call fill(tmp_dir), then move the folder into place; an old one is removed only after."""
    dest = Path(dest)
    _check_destination(dest, force)
    tmp = _temp_sibling(dest)
    old = None
    try:
        tmp.mkdir(mode=0o755)
        fill(tmp)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            old = _temp_sibling(dest)
            os.replace(dest, old)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return dest
