"""The per-user cache folder ($ANYCHIP_CACHE_DIR or ~/.cache/anychip), checked before use.

Its own module because both the compile cache (cache.py) and the tuning database
(tuning/database.py) live there, and the compile cache keys on the tuning database: with the
folder's code in cache.py the two imported each other.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path


class CacheWarning(UserWarning):
    """The cache could not be used; the compile went on without it."""


_WARNED: set[str] = set()


def _warn(message: str) -> None:
    """Warn once per message and process (both driver hooks open the cache)."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(f"anychip cache: {message}", CacheWarning, stacklevel=3)


def user_cache_dir(create: bool = True, warn: bool = True) -> Path | None:
    """The per-user cache folder, checked; None (with a warning) when it is unsafe or unusable."""
    root = os.environ.get("ANYCHIP_CACHE_DIR", "").strip()
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "anychip"
    try:
        if create and not path.exists():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_dir():
            if warn:
                _warn(f"{path} is missing or not a folder; compiling without the cache.")
            return None
        problem = unsafe_reason(path)
    except OSError as exc:
        if warn:
            _warn(f"{path} is not usable ({exc.strerror or exc}); compiling without the cache.")
        return None
    if problem:
        if warn:
            _warn(f"{path} {problem}; refusing to use it (set ANYCHIP_CACHE_DIR to a folder of "
                  f"yours with mode 0700).")
        return None
    return path


def unsafe_reason(path: Path) -> str | None:
    """Why `path` must not be trusted as a cache, or None. Symlinks are followed only after
    checking the link target's owner and mode like the folder itself."""
    info = path.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"is owned by uid {info.st_uid}, not by you (uid {os.getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None
