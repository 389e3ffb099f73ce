"""A per-user cache of built zoo models, as serialized ONNX bytes.

Exporting a torch model costs seconds and the light models' weight calibration up to tens of
seconds, so tests and the CLI build each model once. Location: `zoo/` in `$ANYCHIP_CACHE_DIR`,
else in `~/.cache/anychip`, created with mode 0700; a folder that another user owns or that
others may write to is not used (a planted model would be run by the tests);
`ANYCHIP_NO_CACHE=1` turns it off. An entry is named by
the model and the sha256 of everything its bytes depend on (the builder's source files, the
library versions, the name), is written to a temporary file in the same folder and renamed
into place, and is rebuilt when it does not parse. Writing a new entry for a name removes the
older entries of that name (the big ones are hundreds of MB).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import onnx

ENV = "ANYCHIP_CACHE_DIR"
OFF = "ANYCHIP_NO_CACHE"
SUBDIR = "zoo"      # the compile cache (compiler/cache.py) keeps its entries beside it


def _usable(path: Path) -> str | None:
    """Why `path` must not hold models that tests will run, or None."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not you"
    if st.st_mode & 0o022:
        return f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def cache_dir() -> Path | None:
    """The zoo's cache folder, created 0700 if missing; None when off or unsafe (a warning)."""
    if os.environ.get(OFF, "").strip() not in ("", "0"):
        return None
    root = Path(os.environ.get(ENV, "").strip() or Path.home() / ".cache" / "anychip")
    root = root.expanduser()
    try:
        problem = _usable(root) or _usable(root / SUBDIR)
    except OSError as exc:
        problem = f"is unusable ({exc.strerror or exc})"
    if problem:
        warnings.warn(f"anychip: model cache {root} {problem}; building without it (chmod 700 "
                      f"it, or set {ENV} to a folder of yours).", stacklevel=3)
        return None
    return root / SUBDIR


def cache_key(name: str, sources: Iterable[str | Path], versions: dict[str, str]) -> str:
    """sha256 over the name, the contents of every source file and the library versions."""
    h = hashlib.sha256(f"anychip-zoo-cache/1\0{name}\0".encode())
    for path in sources:
        data = Path(path).read_bytes()
        h.update(f"{Path(path).name}\0{len(data)}\0".encode())
        h.update(data)
    for lib, version in sorted(versions.items()):
        h.update(f"{lib}={version}\0".encode())
    return h.hexdigest()


def _parse(data: bytes) -> onnx.ModelProto | None:
    try:
        proto = onnx.load_from_string(data)
    except Exception:
        return None
    # A file cut at a field boundary can still parse: insist on the parts a model needs.
    if not proto.opset_import or not proto.graph.node or not proto.graph.output:
        return None
    return proto


def _write(root: Path, name: str, entry: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{entry.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, entry)
    except OSError as exc:
        warnings.warn(f"anychip: could not write {entry} ({exc}); the model was built anyway.",
                      stacklevel=4)
        return
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for old in root.glob(f"{name}-*.onnx"):
        if old != entry:
            old.unlink(missing_ok=True)


def cached_model(name: str, sources: Iterable[str | Path], versions: dict[str, str],
                 build: Callable[[], onnx.ModelProto]) -> onnx.ModelProto:
    """The cached model for (name, sources, versions), or build(), store and return it."""
    root = cache_dir()
    if root is None:
        return build()
    entry = root / f"{name}-{cache_key(name, sources, versions)}.onnx"
    if entry.is_file():
        proto = _parse(entry.read_bytes())
        if proto is not None:
            return proto
    proto = build()
    _write(root, name, entry, proto.SerializeToString(deterministic=True))
    return proto
