"""The compile cache: artifacts reused across processes, keyed by everything that shapes them.

Rules (docs/security.md):
- Content-addressed key: model sha256, target profile hash and its TVM target, compile
  options, host CPU and cores, anychip/TVM/ONNX versions, the kernel library's digest, the
  tuning database's digest and this cache's format. Never a path or a time.
- Per-user folder: $ANYCHIP_CACHE_DIR or ~/.cache/anychip, created 0700; a folder owned by
  another user or writable by group/others is refused (no artifact is loaded from it).
- Atomic publish: the entry is filled in a temp folder inside the cache, then os.replace'd
  into place; a concurrent writer of the same key loses the rename and uses the winner's.
- Verify before execute: an entry is opened with load_artifact (format, versions, sha256 of
  every file) before its lib.so is loaded; a bad entry is moved to quarantine/ and rebuilt.
- Failure isolation: a read-only, full or missing cache means compiling in memory with a
  warning; existing entries are never touched by a failed write.
- Bounded size: after each store, least recently used entries beyond $ANYCHIP_CACHE_MAX_GB
  (default 5) are removed, one process at a time (file lock), never one used in the last
  ten minutes (a process may be between checking an entry and loading its lib.so).
`ANYCHIP_NO_CACHE=1` turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import AnychipError
from .user_cache import _WARNED, _warn, unsafe_reason, user_cache_dir  # noqa: F401 - _WARNED: tests
from .user_cache import CacheWarning as CacheWarning  # re-exported: tests and callers use it

CACHE_FORMAT = 1
ENTRIES = "entries"
ALIASES = "aliases"
QUARANTINE = "quarantine"
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 3600
DEFAULT_MAX_GB = 5.0
RECENT_SECONDS = 600


def disabled() -> bool:
    return os.environ.get("ANYCHIP_NO_CACHE", "").strip() not in ("", "0")


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that determines the artifact."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class CompileCache:
    """Entries are folders entries/<key[:2]>/<key>/ holding a whole artifact."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def open(cls) -> "CompileCache | None":
        """The user's cache, or None when disabled or unusable (a warning says why)."""
        if disabled():
            return None
        root = user_cache_dir(create=True, warn=True)
        return cls(root) if root is not None else None

    def entry_path(self, key: str) -> Path:
        return self.root / ENTRIES / key[:2] / key

    def lookup(self, key: str):
        """The cached Artifact for `key`, checked before any load; None on a miss. A corrupted
        entry is quarantined (and so becomes a miss)."""
        from .artifact import load_artifact

        path = self.entry_path(key)
        if not path.exists():
            return None
        try:
            if path.is_symlink() or unsafe_reason(path):
                raise AnychipError(f"{path}: not a plain folder of yours")
            artifact = load_artifact(path)
            with contextlib.suppress(OSError):   # a read-only cache is still a cache
                os.utime(path)                    # recently used: eviction keeps it
            return artifact
        except AnychipError as exc:
            self.quarantine(path, str(exc))
            return None
        except OSError as exc:
            _warn(f"cannot read {path} ({exc.strerror or exc}); compiling again.")
            return None

    def quarantine(self, path: Path, why: str) -> None:
        """Move a bad entry aside (kept for inspection) so the next compile replaces it."""
        dest = self.root / QUARANTINE / f"{path.name}-{int(time.time())}-{uuid.uuid4().hex[:6]}"
        try:
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(path, dest)
            (dest.parent / f"{dest.name}.why").write_text(why + "\n")
        except FileNotFoundError:
            return   # another process moved it first
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
        _warn(f"entry {path.name[:12]} was corrupted ({why[:160]}); it was quarantined and the "
              f"model is compiled again.")

    def store(self, key: str, fill: Callable[[Path], None]) -> Path | None:
        """Publish an entry atomically; returns its path, or None (with a warning) when the
        cache cannot be written. A concurrent publisher of the same key may win: fine, the
        content is the same."""
        final = self.entry_path(key)
        tmp = self.root / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp.mkdir(mode=0o700)
            fill(tmp)
            for file in tmp.rglob("*"):
                if file.is_file():
                    with open(file, "rb") as fh:
                        os.fsync(fh.fileno())
            try:
                os.replace(tmp, final)
            except OSError:
                if not final.is_dir():   # not "another process published it first"
                    raise
            return final
        except OSError as exc:
            _warn(f"cannot write to {self.root} ({exc.strerror or exc}); the artifact was "
                  f"compiled in memory and is not cached.")
            return None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def read_alias(self, alias: str, fingerprint: str | None = None) -> dict | None:
        """The record an alias holds ({"key", "alias", "fingerprint", "target",
        "model_sha256"}); None when absent, unreadable, or written for another alias or model
        (two alias files swapped must not hand model A the artifact of model B)."""
        try:
            with open(self.root / ALIASES / alias, "rb") as fh:
                record = json.loads(fh.read(4096).decode())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("alias") != alias:
            return None
        if fingerprint is not None and record.get("fingerprint") != fingerprint:
            return None
        key = record.get("key")
        if not (isinstance(key, str) and len(key) == 64
                and all(c in "0123456789abcdef" for c in key)):
            return None
        return record

    def write_alias(self, alias: str, key: str, **facts: str) -> None:
        """Record alias -> entry key with what the entry must match (see read_alias)."""
        folder = self.root / ALIASES
        tmp = folder / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            tmp.write_text(json.dumps({"alias": alias, "key": key, **facts}) + "\n")
            os.replace(tmp, folder / alias)
        except OSError:
            pass   # an alias is only a shortcut
        finally:
            if tmp.exists():
                tmp.unlink()

    def evict(self, max_bytes: float | None = None) -> list[Path]:
        """Remove least recently used entries until the entries fit in `max_bytes`."""
        import fcntl

        if max_bytes is None:
            try:
                max_bytes = float(os.environ.get("ANYCHIP_CACHE_MAX_GB", DEFAULT_MAX_GB)) * 1e9
            except ValueError:
                max_bytes = DEFAULT_MAX_GB * 1e9
        removed: list[Path] = []
        try:
            with open(self.root / ".evict.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                entries = []
                for entry in (self.root / ENTRIES).glob("*/*"):
                    size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
                    entries.append((entry.stat().st_mtime, size, entry))
                total = sum(size for _, size, _ in entries)
                now = time.time()
                for mtime, size, entry in sorted(entries, key=lambda e: e[0]):
                    if total <= max_bytes or now - mtime < RECENT_SECONDS:
                        break
                    trash = self.root / f"{TMP_PREFIX}evicted-{uuid.uuid4().hex}"
                    os.replace(entry, trash)   # atomic: a reader sees the entry or nothing
                    shutil.rmtree(trash, ignore_errors=True)
                    total -= size
                    removed.append(entry)
        except (BlockingIOError, OSError):
            pass   # another process is evicting, or the cache is not writable
        return removed

    def clean_stale(self, older_than: float = STALE_TMP_SECONDS) -> None:
        """Remove temp folders left by killed processes (never a published entry) and
        quarantined entries older than a day."""
        now = time.time()
        old = [(tmp, older_than) for tmp in self.root.glob(f"{TMP_PREFIX}*")]
        old += [(bad, 86400.0) for bad in (self.root / QUARANTINE).glob("*")]
        for path, age in old:
            try:
                if now - path.lstat().st_mtime > age:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink()
            except OSError:
                continue


def code_digest() -> str:
    """sha256 of anychip's own sources (.py, .yaml, .json under its packages), so an edited
    checkout never reuses an artifact built by different code under the same version."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        import importlib.util

        # the packages' folders without importing them (importing anychip from its own core
        # made an import cycle)
        digest = hashlib.sha256()
        roots = {Path(p).resolve()
                 for name in ("anychip", "anychip.compiler", "anychip.backends", "anychip.models")
                 for p in (importlib.util.find_spec(name).submodule_search_locations or [])}
        for root in sorted(roots):
            for file in sorted(root.rglob("*")):
                if file.suffix in (".py", ".yaml", ".json") and "__pycache__" not in file.parts:
                    digest.update(str(file.relative_to(root)).encode() + b"\0")
                    digest.update(file.read_bytes())
        _CODE_DIGEST = digest.hexdigest()
    return _CODE_DIGEST


_CODE_DIGEST: str | None = None


def _common_parts(target: str, options) -> dict[str, Any]:
    import onnx
    import tvm

    from .artifact import FORMAT_VERSION
    from .registry import get_backend, get_profile
    from .tuning import database_digest
    from .version import __version__

    profile = get_profile(target)
    backend = get_backend(profile)
    tvm_target = backend.target(profile)
    return {
        "target": target,
        "profile_sha256": profile.sha256(),
        "tvm_target": str(tvm_target),
        "options": options.as_dict(),
        "backend": backend.cache_key_parts(profile),
        "tuning_db": database_digest(str(tvm_target)),
        "versions": {"anychip": __version__, "code": code_digest(), "tvm": tvm.__version__,
                     "onnx": onnx.__version__, "artifact_format": FORMAT_VERSION},
    }


def key_parts(source, target: str, options) -> dict[str, Any]:
    """Everything that determines the artifact of compiling a loaded model for `target`."""
    return {"model_sha256": source.sha256, "inputs": [s.as_dict() for s in source.inputs],
            **_common_parts(target, options)}


def model_fingerprint(model) -> str | None:
    """A content digest of a model as the user gave it, before the frontend runs; None when
    there is no cheap one (torch modules, ONNX files with external data)."""
    import onnx

    if isinstance(model, (str, Path)) and str(model).startswith("zoo:"):
        # zoo builders are seeded code (covered by the code digest in the key) run by these
        # libraries: torch models are exported, the others calibrated with ONNX Runtime
        versions = ",".join(f"{lib}={_version(lib)}" for lib in
                            ("torch", "onnxscript", "onnxruntime", "numpy"))
        return f"zoo:{str(model)[4:]}|{versions}"
    if isinstance(model, (str, Path)):
        from .onnx_safety import check_model_file

        # the loader's file checks first: /dev/zero or a named pipe must not be read here
        check_model_file(Path(model), str(model))
        try:
            data = Path(model).read_bytes()
        except OSError:
            return None
        # external data entries always carry a "location" key: without that string the
        # file is the whole model
        return None if b"location" in data else "onnx:" + hashlib.sha256(data).hexdigest()
    if isinstance(model, (bytes, bytearray)):
        return None if b"location" in model else "onnx:" + hashlib.sha256(model).hexdigest()
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString(deterministic=True)
        return None if b"location" in data else "onnx:" + hashlib.sha256(data).hexdigest()
    return None


def _version(lib: str) -> str:
    try:
        from importlib.metadata import version

        return version(lib)
    except Exception:
        return "absent"


def cached_source(compile_fn):
    """Wrap the driver's compile_source(source, target, options) with the cache."""
    import functools

    @functools.wraps(compile_fn)
    def compile_with_cache(source, target, options):
        cache = CompileCache.open()
        if cache is None:
            return compile_fn(source, target, options)
        key = cache_key(key_parts(source, target, options))
        hit = cache.lookup(key)
        if hit is not None:
            return hit
        artifact = compile_fn(source, target, options)
        cache.clean_stale()
        path = cache.store(key, lambda tmp: shutil.copytree(artifact.path, tmp,
                                                             dirs_exist_ok=True))
        if path is None:
            return artifact
        cache.evict()
        return cache.lookup(key) or artifact

    return compile_with_cache


def _alias_matches(manifest: dict, record: dict, target: str, options) -> bool:
    """The entry an alias names is the one it was written for: same model, target, options."""
    def canon(value) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    return (manifest.get("target") == target == record.get("target")
            and manifest.get("model", {}).get("sha256") == record.get("model_sha256")
            and canon(manifest.get("options")) == canon(options.as_dict()))


def cached_model(compile_fn):
    """Wrap the driver's compile_model(model, target, ...) so that a model given as a file,
    bytes, a ModelProto or zoo:NAME is found in the cache before the frontend runs: an alias
    (the raw model's digest and the options) points at the entry compile_source published."""
    import functools

    from .backend import CompileOptions

    @functools.wraps(compile_fn)
    def compile_with_cache(model, target="cpu", example_inputs=None, precision=None,
                           shapes=None, **extra):
        cache = CompileCache.open()
        fingerprint = model_fingerprint(model) if cache is not None else None
        if fingerprint is None:
            return compile_fn(model, target, example_inputs, precision, shapes, **extra)
        norm_shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
        options = CompileOptions(precision=precision, shapes=norm_shapes, hot=bool(
            extra.get("hot", False)), extra={k: v for k, v in extra.items() if k != "hot"})
        alias = cache_key({"model": fingerprint, **_common_parts(target, options)})
        record = cache.read_alias(alias, fingerprint)
        hit = cache.lookup(record["key"]) if record else None
        if hit is not None and _alias_matches(hit.manifest, record, target, options):
            return hit
        artifact = compile_fn(model, target, example_inputs, precision, shapes, **extra)
        if artifact.path.parent.parent == cache.root / ENTRIES:   # published by compile_source
            cache.write_alias(alias, artifact.path.name, fingerprint=fingerprint, target=target,
                              model_sha256=artifact.manifest["model"]["sha256"])
        return artifact

    return compile_with_cache
