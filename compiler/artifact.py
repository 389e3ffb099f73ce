"""The artifact (docs/architecture.md): a folder NAME.anychip/ with manifest.json, lib.so, device/,
report.json.

lib.so is native code: loading it runs its initialisers. So loading checks everything first:
format version, anychip and TVM versions, and the sha256 of every file, before any dlopen.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import weakref
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .backend import BuildResult, CompileOptions, Execution
from .errors import AnychipError, InputsRejected
from .export_library import export_library
from .frontend import ModelSource, TensorSpec
from .importer_fixes.lowbit import NP_NAMES as LOWBIT_NAMES
from .inputs import order_inputs, order_static, static_signature
from .profiles import Profile

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LIBRARY = "lib.so"
REPORT = "report.json"


def versions() -> dict[str, str]:
    import tvm

    from .version import __version__

    return {"anychip": __version__, "tvm": tvm.__version__}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_artifact(directory: Path, result: BuildResult, source: ModelSource, profile: Profile,
                   options: CompileOptions, execution: Execution) -> dict:
    """Fill `directory`; the manifest, with every file's hash, is written last. A failed
    write (full disk, quota) is one line, exit 2: nothing the user owns was touched yet."""
    try:
        return _write_artifact(directory, result, source, profile, options, execution)
    except AnychipError:
        raise
    except Exception as exc:   # OSError, or TVM's RuntimeError when the linker cannot write
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        why = getattr(exc, "strerror", None) or (lines[-1] if lines else type(exc).__name__)
        raise AnychipError(f"{directory}: cannot write the build folder ({why[:200]}); free "
                           f"space in {tempfile.gettempdir()} (or set TMPDIR) and retry.") from exc


def _write_artifact(directory: Path, result: BuildResult, source: ModelSource, profile: Profile,
                    options: CompileOptions, execution: Execution) -> dict:
    export_library(result.executable, str(directory / LIBRARY))   # a full disk: OSError
    for name, data in sorted(result.device_sources.items()):
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise AnychipError(f"backend produced an unsafe device file name '{name}'.")
        dest = directory / "device" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data if isinstance(data, bytes) else str(data).encode())
    report = {"target": profile.name, "execution_here": execution.mode.value,
              "execution_why": execution.why, **result.report}
    (directory / REPORT).write_text(json.dumps(report, indent=2, default=str))
    files = {p.relative_to(directory).as_posix(): _sha256(p)
             for p in sorted(directory.rglob("*")) if p.is_file()}
    manifest = {
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "target": profile.name,
        "family": profile.family,
        "profile": profile.raw,
        "profile_sha256": profile.sha256(),
        "model": {"label": source.label, "sha256": source.sha256},
        "inputs": [s.as_dict() for s in source.inputs],
        # symbolic dims: {name: {"min": lo, "max": hi}}; run() checks inputs against them
        "symbols": _symbols(source),
        "outputs": [s.as_dict() for s in source.outputs],
        "precision": result.precision,
        "options": options.as_dict(),
        "runtime": result.runtime,
        "files": files,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def _symbols(source: ModelSource) -> dict:
    from .importer import symbol_bounds

    return {n: {"min": lo, "max": hi} for n, (lo, hi) in symbol_bounds(source).items()}


class Artifact:
    """A compiled model. `run` executes it where its target can run here, else raises
    NotExecutable (exit 3) with the reason; `save` publishes it atomically."""

    def __init__(self, path: Path, manifest: dict, temporary: bool = False):
        self.path = Path(path)
        self.manifest = manifest
        self._runner = None
        # (inputs, outputs, symbols, static signature), read from the manifest at the first run
        self._io = None
        if temporary:
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def profile(self) -> Profile:
        raw = self.manifest["profile"]
        return Profile(name=raw["name"], vendor=raw["vendor"], family=raw["family"],
                       description=raw["description"], target=dict(raw["target"]),
                       dtypes=tuple(raw["dtypes"]), precisions=tuple(raw["precisions"]), raw=raw)

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def _model_label(self) -> str:
        """The model's name for error lines (a cached artifact's directory is a hash)."""
        return str((self.manifest.get("model") or {}).get("label") or self.path.name)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest["outputs"]]

    @property
    def symbols(self) -> dict[str, tuple[int, int]]:
        """{symbol: (lo, hi)} of the inputs' symbolic dims; {} for a static artifact."""
        return {n: (int(b["min"]), int(b["max"]))
                for n, b in (self.manifest.get("symbols") or {}).items()}

    def sizes_at(self, where: str = "min") -> dict[str, int]:
        """Each symbol at its lower bound ('min'), upper bound ('max') or midpoint ('mid')."""
        pick = {"min": lambda lo, hi: lo, "max": lambda lo, hi: hi,
                "mid": lambda lo, hi: (lo + hi + 1) // 2}[where]
        return {n: pick(lo, hi) for n, (lo, hi) in self.symbols.items()}

    def sizes_for(self, at: dict[str, int] | None = None) -> dict[str, int]:
        """One concrete shape to run a symbolic artifact at (bench, compare): each symbol at
        `at[name]` when given (checked against its bounds), else its lower bound, or its
        smallest gear where the symbol runs at exact gears only. {} for a static artifact."""
        bounds, at = self.symbols, dict(at or {})
        unknown = sorted(set(at) - set(bounds))
        if unknown:
            known = ", ".join(bounds) or "none: the artifact is static"
            raise AnychipError(f"--at {unknown[0]}: not a symbol of the model's inputs "
                               f"(symbols: {known}).")
        modes = self.manifest.get("gear_modes") or {}
        gears = [dict(g["sizes"]) for g in self.manifest.get("gears") or []]
        sizes = {}
        for name, (lo, hi) in bounds.items():
            allowed = sorted({g[name] for g in gears if name in g}) \
                if modes.get(name) == "exact" else []
            value = at.get(name, allowed[0] if allowed else lo)
            if not lo <= value <= hi or (allowed and value not in allowed):
                where = f"one of the gears {allowed}" if allowed else f"within {lo}..{hi}"
                raise AnychipError(f"--at {name}={value}: the symbol '{name}' must be {where}.")
            sizes[name] = value
        return sizes

    @property
    def library_path(self) -> Path:
        return self.path / LIBRARY

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.path / REPORT).read_text())

    def device_files(self) -> list[Path]:
        return sorted(p for p in (self.path / "device").rglob("*") if p.is_file())

    def _backend(self):
        from .registry import backends

        backend = backends().get(self.manifest["family"])
        if backend is None:
            raise AnychipError(f"{self.path}: no '{self.manifest['family']}' backend is installed.")
        return backend

    def execution(self) -> Execution:
        return self._backend().execution(self.profile)

    def run(self, inputs=None, seed: int = 0) -> dict[str, np.ndarray]:
        """Run on numpy (or torch) inputs; None means seeded random inputs. Outputs by name."""
        if self._io is None:   # a run's own cost matters for small models (zoo:mlp: ~60 us)
            specs, outputs = self.inputs, self.outputs
            lowbit = any(spec.dtype in LOWBIT_NAMES for spec in (*specs, *outputs))
            self._io = (specs, outputs, self.symbols, static_signature(specs), lowbit)
        specs, outputs, symbols, signature, lowbit = self._io
        if inputs is None:
            from .inputs import random_inputs

            inputs = random_inputs(specs, seed, self.sizes_at("min"))
        feed = inputs
        ordered = order_static(signature, feed) if signature is not None else None
        if ordered is None:
            ordered = order_inputs(specs, feed, self._model_label, symbols)
        if self.manifest.get("gears"):   # static programs per gear (compiler/gears.py)
            from .gear_runner import GearRunner
            from .inputs import bind_symbols

            if self._runner is None:
                self._runner = GearRunner(self, load_artifact)
            return self._runner.run(specs, ordered,
                                    bind_symbols(specs, ordered, self._model_label, symbols))
        if self._runner is None:
            self._runner = self._backend().runner(self)
        if not lowbit:   # (function-level imports and per-array checks: ~2 us a run)
            try:
                return {spec.name: value
                        for spec, value in zip(outputs, self._runner.run(ordered))}
            except Exception as exc:
                raise shape_check_error(exc, self._model_label, specs, ordered) or exc
        # low-bit tensors (float8, int4...) travel as their uint8 storage (importer_fixes/lowbit.py)
        from .importer_fixes.lowbit import from_storage, to_storage

        try:
            results = self._runner.run([to_storage(a) for a in ordered])
        except Exception as exc:
            raise shape_check_error(exc, self._model_label, specs, ordered) or exc
        return {spec.name: from_storage(value, spec.dtype)
                for spec, value in zip(outputs, results)}

    def save(self, dest: str | Path, force: bool = False) -> "Artifact":
        from .atomic import publish_dir

        src = self.path

        def fill(tmp: Path) -> None:
            shutil.copytree(src, tmp, dirs_exist_ok=True)

        publish_dir(dest, fill, force=force)
        return load_artifact(dest)


STAGING_PREFIX = "anychip-build-"


def clean_stale_staging() -> list[Path]:
    """Remove build folders of compiles that were killed: only ours (our uid, our name
    pattern with the writer's pid), only when that pid is dead."""
    from .atomic import pid_alive

    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        parts = path.name[len(STAGING_PREFIX):].split("-", 1)
        if len(parts) != 2 or not parts[0].isdigit() or pid_alive(int(parts[0])):
            continue
        try:
            if path.is_symlink() or not path.is_dir() or path.lstat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def new_staging_dir() -> Path:
    """A private build folder named after this process, so a later compile can tell a killed
    compile's leftover (pid dead) from a running one's."""
    clean_stale_staging()
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))


def _refuse_links_and_special_files(path: Path, label: str) -> None:
    """Nothing inside an artifact may be a symlink (a `device/` pointing elsewhere would make
    the hashes vouch for files outside it) or a fifo/device (reading one hangs or never ends)."""
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in (*dirs, *files):
            entry = Path(root) / name
            mode = entry.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise AnychipError(f"{label}: '{entry.relative_to(path)}' is a symbolic link; "
                                   f"artifacts never contain links, refusing to load it.")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise AnychipError(f"{label}: '{entry.relative_to(path)}' is not a regular "
                                   f"file; refusing to load the artifact.")


def read_manifest(path: Path, label: str) -> dict:
    """manifest.json parsed (size-capped, UTF-8) and validated against the schema."""
    from .limits import MAX_MANIFEST_BYTES
    from .manifest_schema import validate_manifest

    file = path / MANIFEST
    try:
        info = file.lstat()
    except FileNotFoundError as exc:
        raise AnychipError(f"{label}: not an anychip artifact (no {MANIFEST}).") from exc
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
        raise AnychipError(f"{label}: {MANIFEST} is not a regular file under "
                           f"{MAX_MANIFEST_BYTES >> 20} MiB; refusing it.")
    try:
        with open(file, "rb") as fh:
            manifest = json.loads(fh.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise AnychipError(f"{label}: {MANIFEST} is corrupted; recompile the model.") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else "?"
        raise AnychipError(f"{label}: artifact format {version} is not {FORMAT_VERSION}; "
                           f"recompile with this anychip.")
    files = manifest.get("files")
    for rel in files if isinstance(files, dict) else ():
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or "\\" in rel:
            raise AnychipError(f"{label}: manifest lists an unsafe path '{rel}'; refused.")
    return validate_manifest(manifest, label)


def _check_target_consistency(manifest: dict, label: str) -> None:
    """What a run reports comes from the backend and profile installed here, so the manifest's
    target, family and embedded profile must agree with them (an artifact edited to say
    another chip must not run on this one's backend and report that chip)."""
    import hashlib

    from .registry import get_profile

    raw = manifest["profile"]
    if raw["name"] != manifest["target"] or raw["family"] != manifest["family"]:
        raise AnychipError(f"{label}: manifest target '{manifest['target']}' ({manifest['family']}) "
                           f"does not match its profile '{raw['name']}' ({raw['family']}); the "
                           f"artifact was edited, recompile the model.")
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
    if digest != manifest["profile_sha256"]:
        raise AnychipError(f"{label}: the manifest's profile does not match profile_sha256; the "
                           f"artifact was edited, recompile the model.")
    installed = get_profile(manifest["target"])
    if installed.family != manifest["family"]:
        raise AnychipError(f"{label}: target '{installed.name}' is a {installed.family} target "
                           f"here, the manifest says {manifest['family']}; recompile the model.")


def load_artifact(path: str | Path) -> Artifact:
    """Open a saved artifact after checking format, versions and every file's sha256."""
    path = Path(path)
    label = str(path)
    if not path.is_dir():
        raise AnychipError(f"{label}: no such artifact folder; create one with 'anychip compile'.")
    _refuse_links_and_special_files(path, label)
    manifest = read_manifest(path, label)
    here = versions()
    built = manifest.get("versions", {})
    for key, value in here.items():
        if built.get(key) != value:
            raise AnychipError(f"{label}: built with {key} {built.get(key)}, this is {key} "
                               f"{value}; recompile the model.")
    files = manifest.get("files", {})
    if LIBRARY not in files and not manifest.get("gears"):   # gears: one lib.so per gear
        raise AnychipError(f"{label}: the manifest does not list {LIBRARY}; recompile the model.")
    for rel, digest in files.items():
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise AnychipError(f"{label}: manifest lists an unsafe path '{rel}'; refused.")
        file = path / pure
        if file.is_symlink() or not file.is_file():
            raise AnychipError(f"{label}: '{rel}' is missing or not a regular file; the artifact "
                               f"is corrupted, recompile the model.")
        if _sha256(file) != digest:
            raise AnychipError(f"{label}: '{rel}' does not match its sha256 in the manifest; the "
                               f"artifact is corrupted or was tampered with, recompile the model.")
    _check_target_consistency(manifest, label)
    artifact = Artifact(path, manifest)
    check = getattr(artifact._backend(), "check_loadable", None)
    # a gear artifact (compiler/gears.py): each gear is a static artifact with its own
    # manifest (already checked against this one's sha256s); the backend checks those
    checked = [manifest]
    if manifest.get("gears"):
        checked = []
        for gear in manifest["gears"]:
            rel = f"{gear.get('path')}/{MANIFEST}"
            if rel not in (manifest.get("files") or {}):   # listed: a safe path, sha-checked
                raise AnychipError(f"{label}: gear '{gear.get('path')}' has no {MANIFEST} "
                                   f"listed in the manifest; the artifact is corrupted, "
                                   f"recompile the model.")
            checked.append(read_manifest(path / gear["path"], label))
    if check is not None:
        try:
            for one in checked:
                check(one)
        except AnychipError as exc:   # the backend's words, with the artifact named
            message = str(exc)
            raise type(exc)(message if message.startswith(label) else f"{label}: {message}") \
                from None
    return artifact


def shape_check_error(exc: Exception, label: str, specs, arrays) -> InputsRejected | None:
    """The one line for a run whose input sizes the model does not accept although each lies
    within its symbol's bounds: two dims the graph requires to be equal differ at these sizes
    (a skip connection after a stride-2 layer, at an odd height). The compiled program checks
    them (a Relax match_cast) and the VM raises; None for any other failure."""
    text = str(exc)
    sizes = ", ".join(f"{spec.name} {'x'.join(str(d) for d in np.shape(a)) or 'scalar'}"
                      for spec, a in zip(specs, arrays))
    if "View with shape" in text and "would have a size of" in text:   # a Reshape's view
        return InputsRejected(f"{label}: the model's shapes do not agree at input sizes "
                              f"({sizes}): a Reshape asks for more elements than its input "
                              f"holds at these sizes; give sizes the model's reshapes accept.")
    if "match_cast" not in text or "mismatch" not in text:
        return None
    if "ty=R.Shape([0])" in text:   # a run-time check (converters.runtime_refusal)
        return InputsRejected(f"{label}: the compiled program refused these inputs ({sizes}): "
                              f"one of its run-time checks failed (a reflect or wrap Pad wider "
                              f"than its axis, a shape input whose value differs from the one "
                              f"compiled in, or Dropout asked to train); ONNX Runtime refuses "
                              f"the first too, the second needs a compile with that value.")
    if "ty=R.Tensor" not in text:
        return None
    found = re.search(r"\((\d+) vs\. (\d+)\)", text)
    detail = f": a dim is {found[1]} where the graph computes {found[2]}" if found else ""
    return InputsRejected(f"{label}: the model's shapes do not agree at input sizes ({sizes})"
                          f"{detail}; the compiled program needs the dims the graph joins or "
                          f"broadcasts together to be equal: give sizes where they are (for "
                          f"strided maps, multiples of the total stride).")
