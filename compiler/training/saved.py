"""A saved trainer: a folder with manifest.json, lib.so (the compiled step) and state.npz.

Written to a temporary sibling and renamed into place (compiler.atomic), the manifest last with
the sha256 of every file. Loading checks format, anychip/TVM versions and hashes before the
library is touched, and the library is loaded from the very bytes that were checked.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ..atomic import publish_dir
from ..errors import AnychipError

FORMAT = "anychip-trainer"
FORMAT_VERSION = 2   # 2: the optimizer state starts with the lr slot
MANIFEST, LIBRARY, STATE = "manifest.json", "lib.so", "state.npz"


def _versions() -> dict:
    import tvm

    from ..version import __version__

    return {"anychip": __version__, "tvm": tvm.__version__}


def _state_bytes(arrays: dict) -> bytes:
    flat = {"meta/steps": np.array(arrays["steps"], dtype=np.int64),
            "meta/micro": np.array(arrays.get("micro", 0), dtype=np.int64),
            "meta/draws": np.array(arrays.get("draws", 0), dtype=np.int64),
            "meta/scaler": np.array(json.dumps(arrays.get("scaler")))}
    for i, value in enumerate(arrays.get("pending", [])):
        flat[f"pending/{i}"] = np.asarray(value)
    for group in ("params", "states", "optim"):
        for i, value in enumerate(arrays[group]):
            flat[f"{group}/{i}"] = np.asarray(value)
    for i, (key, value) in enumerate(arrays["fixed"].items()):
        flat[f"fixed/{i}"] = np.asarray(value)
    buf = io.BytesIO()
    np.savez(buf, **flat)
    return buf.getvalue()


def save_trainer(trainer, path, force: bool = False) -> Path:
    arrays = trainer.arrays()
    files = {LIBRARY: trainer.library_bytes(), STATE: _state_bytes(arrays)}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": _versions(),
                "plan": trainer.plan, "fixed_keys": list(arrays["fixed"]),
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}

    def fill(tmp: Path) -> None:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))

    return publish_dir(path, fill, force=force)


def _read_checked(path: Path, name: str, digest: str) -> bytes:
    file = path / name
    if file.is_symlink() or not file.is_file():
        raise AnychipError(f"{path}: '{name}' is missing; the saved trainer is incomplete.")
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise AnychipError(f"{path}: '{name}' does not match its sha256 in the manifest; the "
                           f"saved trainer is corrupted. Save it again.")
    return data


def read_trainer(path):
    """Check everything in a saved trainer folder: (plan, arrays, library bytes, execution),
    what Trainer needs (trainer.load_trainer builds it: this module does not import the Trainer,
    which imports this module to save)."""
    from ..backend import Execution, Mode
    from ..registry import backends, execution, get_profile

    path = Path(path)
    if not path.is_dir():
        raise AnychipError(f"{path}: no such saved trainer (a folder written by trainer.save).")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise AnychipError(f"{path}: not a saved trainer (no {MANIFEST}).") from exc
    except (OSError, ValueError) as exc:
        raise AnychipError(f"{path}: {MANIFEST} is corrupted; save the trainer again.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AnychipError(f"{path}: not a saved trainer (an artifact? use anychip.load).")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise AnychipError(f"{path}: trainer format {manifest.get('format_version')} is not "
                           f"{FORMAT_VERSION}; save it again with this anychip.")
    built = manifest.get("versions", {})
    for key, value in _versions().items():
        if built.get(key) != value:
            raise AnychipError(f"{path}: saved with {key} {built.get(key)}, this is {key} "
                               f"{value}; compile the trainer again.")
    files = manifest.get("files", {})
    if set(files) != {LIBRARY, STATE}:
        raise AnychipError(f"{path}: the manifest lists {sorted(files)}; expected "
                           f"{LIBRARY} and {STATE}.")
    library = _read_checked(path, LIBRARY, files[LIBRARY])
    state = _read_checked(path, STATE, files[STATE])
    plan = manifest["plan"]
    backend = backends().get(plan["built_family"])
    if backend is not None and hasattr(backend, "check_loadable"):
        backend.check_loadable({"runtime": plan["runtime"]})
    profile = get_profile(plan["target"])
    ex = execution(profile)
    if plan["report"].get("built_for") != plan["target"] and ex.mode is not Mode.SIMULATES:
        ex = Execution(Mode.UNAVAILABLE, f"built for the host as a simulation, but "
                                         f"'{plan['target']}' does not simulate here")
    with np.load(io.BytesIO(state), allow_pickle=False) as data:
        def group(name, count):
            return [data[f"{name}/{i}"] for i in range(count)]

        arrays = {"params": group("params", len(plan["params"])),
                  "states": group("states", len(plan["states"])),
                  "optim": group("optim", int(plan["optim_count"])),
                  "fixed": dict(zip(manifest["fixed_keys"],
                                    group("fixed", len(manifest["fixed_keys"])))),
                  "steps": int(data["meta/steps"]),
                  "micro": int(data["meta/micro"]),
                  "draws": int(data["meta/draws"]) if "meta/draws" in data.files else 0,
                  "scaler": (json.loads(str(data["meta/scaler"])) if "meta/scaler" in data.files
                             else None),
                  "pending": [data[k] for k in sorted(
                      (k for k in data.files if k.startswith("pending/")),
                      key=lambda k: int(k.split("/")[1]))]}
    return plan, arrays, library, ex
