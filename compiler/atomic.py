"""Publish files and folders atomically: write beside the destination, then rename.

Nothing already written is lost or half-written: an existing destination or a symlink is
refused unless `force`; a folder is replaced only when it is one of ours (it holds a
`manifest.json`), never `.`, `..` or a folder above the working directory, because `--force`
once deleted a user's folder of data. A folder is swapped in with one atomic exchange
(renameat2 RENAME_EXCHANGE, Linux >= 3.15) so a kill at any moment leaves either the old or the
new artifact at the destination; where the OS has no exchange, the old folder is renamed aside
first and a later publish puts it back if the process died in between. A failed write (full
disk, quota, file-size limit) is one line, exit 2, and the old content stays.

Temporary names carry the writer's pid (`.NAME.tmp-PID-RANDOM`, `.NAME.old-PID-RANDOM`): a
leftover whose writer is dead is removed (or, for a folder set aside, restored) by the next
publish to the same place. Nothing that does not match those names, or that another user owns,
is touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import AnychipError

ARTIFACT_MARKER = "manifest.json"   # an anychip folder (compile artifact, saved trainer)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftover_re(name: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{{8}}$")


def clean_leftovers(dest: Path) -> list[Path]:
    """Remove temp siblings of `dest` whose writer died; restore a folder set aside when the
    destination is missing. Returns what was removed or restored."""
    pattern = _leftover_re(dest.name)
    done: list[Path] = []
    try:
        siblings = list(dest.parent.iterdir())
    except OSError:
        return done
    for path in sorted(siblings):
        match = pattern.match(path.name)
        if not match or pid_alive(int(match["pid"])):
            continue
        try:
            if path.lstat().st_uid != os.getuid():
                continue
            if match["kind"] == "old" and not os.path.lexists(dest) and path.is_dir():
                os.rename(path, dest)          # the old artifact goes back where it was
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            done.append(path)
        except OSError:
            continue
    return done


def _refuse_unsafe_target(dest: Path) -> None:
    """`.`, `..`, `/` or any folder containing the working directory are never replaced."""
    if dest.name in ("", ".", ".."):
        raise AnychipError(f"{dest}: refusing to write over '.' or '..'; name a new folder, "
                           f"e.g. -o model.anychip.")
    try:
        resolved, cwd = dest.resolve(), Path.cwd().resolve()
    except OSError:
        return
    if resolved == cwd or resolved in cwd.parents:
        raise AnychipError(f"{dest}: is the working folder or one above it; refusing to replace "
                           f"it. Name a new folder, e.g. -o model.anychip.")


def _check_destination(dest: Path, force: bool, marker: str | None = None) -> None:
    if dest.is_symlink():
        if not force:
            raise AnychipError(f"{dest}: is a symbolic link; refusing to write through it "
                               f"(remove it or pass --force to replace the link itself).")
    elif dest.exists() and not force:
        raise AnychipError(f"{dest}: already exists; pass --force to replace it.")
    elif dest.is_dir() and marker is not None and not (dest / marker).is_file():
        raise AnychipError(f"{dest}: is a folder but not an anychip artifact (no {marker}); "
                           f"--force only replaces anychip's own folders. Move it away or "
                           f"choose another output.")
    elif dest.is_dir() and marker is None:
        raise AnychipError(f"{dest}: is a folder; refusing to replace it with a file.")
    if not dest.parent.exists():
        raise AnychipError(f"{dest}: folder '{dest.parent}' does not exist; create it first.")


def check_output(dest: str | Path, force: bool, marker: str | None = ARTIFACT_MARKER) -> None:
    """The checks publish_dir/write_file make, for a CLI to run before a long compile."""
    dest = Path(dest)
    _refuse_unsafe_target(dest)
    _check_destination(dest, force, marker)


def _temp_sibling(dest: Path, kind: str = "tmp") -> Path:
    return dest.parent / f".{dest.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _write_failed(dest: Path, exc: OSError, what: str) -> AnychipError:
    why = exc.strerror or str(exc)
    hint = " (disk full?)" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    return AnychipError(f"{dest}: cannot write{hint}: {why}; {what} Free space or choose "
                        f"another output.")


_LIBC = None


def _renameat2():
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _LIBC = False
    return getattr(_LIBC, "renameat2", None) if _LIBC else None


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False when the OS or file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(root: Path) -> None:
    for file in root.rglob("*"):
        if file.is_file() and not file.is_symlink():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())


def write_file(dest: str | Path, write: Callable[[Path], None], force: bool = False) -> Path:
    """Call write(tmp_path) and rename the result onto dest."""
    dest = Path(dest)
    _refuse_unsafe_target(dest)
    _check_destination(dest, force)
    clean_leftovers(dest)
    tmp = _temp_sibling(dest)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)          # replaces a symlink itself, never its target
    except OSError as exc:
        raise _write_failed(dest, exc, "the old file, if any, is unchanged.") from exc
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()
    return dest


def publish_dir(dest: str | Path, fill: Callable[[Path], None], force: bool = False,
                marker: str = ARTIFACT_MARKER) -> Path:
    """Call fill(tmp_dir), then swap the folder into place atomically; the old one, if any,
    is removed only after. An existing folder without `marker` is never replaced."""
    dest = Path(dest)
    _refuse_unsafe_target(dest)
    clean_leftovers(dest)
    _check_destination(dest, force, marker)
    tmp = _temp_sibling(dest)
    aside = None
    try:
        tmp.mkdir(mode=0o755)
        fill(tmp)
        _fsync_tree(tmp)
        if dest.is_symlink() or dest.is_file():
            os.replace(tmp, dest)      # a link or file is replaced in one rename
        elif dest.is_dir():
            if not exchange(tmp, dest):
                aside = _temp_sibling(dest, "old")   # restored by clean_leftovers if we die
                os.rename(dest, aside)
                os.rename(tmp, dest)
            # after an exchange `tmp` holds the old folder and is removed below
        else:
            os.rename(tmp, dest)
    except OSError as exc:
        if aside is not None and not os.path.lexists(dest):
            os.rename(aside, dest)
            aside = None
        raise _write_failed(dest, exc, "the old artifact, if any, is unchanged.") from exc
    finally:
        for left in (tmp, aside):
            if left is not None and os.path.lexists(left):
                shutil.rmtree(left, ignore_errors=True)
    return dest
