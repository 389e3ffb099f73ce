"""A per-user cache of built zoo models, as serialized ONNX bytes.

Exporting a torch model costs seconds and the light models' weight calibration up to tens of
seconds, so tests and the CLI build each model once. Location: `$ANYCHIP_CACHE_DIR`, else
`~/.cache/anychip`, created with mode 0700; a folder that another user owns or that others
may write to is not used (a planted model would be run by the tests). An entry is named by
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


def cache_dir() -> Path | None:
    """The cache folder, created if missing; None when it cannot be used safely."""
    root = Path(os.environ.get(ENV) or Path.home() / ".cache" / "anychip")
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = root.stat()
    except OSError as exc:
        warnings.warn(f"anychip: model cache {root} unusable ({exc}); building without it.",
                      stacklevel=3)
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        warnings.warn(f"anychip: model cache {root} is not a folder of yours closed to other "
                      f"users (chmod 700 it, or set {ENV}); building without it.", stacklevel=3)
        return None
    return root


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
