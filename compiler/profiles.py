"""Chip profiles: one YAML file per chip in backends/profiles/, validated at load.

A profile is data (knowledge is data): adding a chip of a known family is one
YAML file. A malformed profile is one error naming the file and the offending field.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ProfileError

PROFILE_DIR = Path(__file__).resolve().parent.parent / "backends" / "profiles"
try:  # installed layout: anychip/compiler and anychip/backends are siblings
    from .. import backends as _backends_pkg

    PROFILE_DIR = Path(_backends_pkg.__file__).resolve().parent / "profiles"
except ImportError:  # pragma: no cover - source checkout without the package mapping
    pass


@dataclass(frozen=True)
class Profile:
    """One chip, as its YAML file says. `raw` keeps every field for family-specific readers."""

    name: str
    vendor: str
    family: str
    description: str
    target: dict
    dtypes: tuple[str, ...]
    precisions: tuple[str, ...]
    raw: dict = field(repr=False, compare=False)
    path: Path | None = field(default=None, compare=False)

    @property
    def chip(self) -> dict:
        """Family-specific facts (buffers, cube shape, warp size...)."""
        return self.raw.get("chip", {})

    @property
    def uncertain(self) -> tuple[str, ...]:
        return tuple(self.raw.get("uncertain", ()))

    @property
    def default_precision(self) -> str:
        return self.precisions[0]

    def get(self, dotted: str, default: Any = None) -> Any:
        """Read a nested field by dotted path, e.g. profile.get('memory.bandwidth_gbs')."""
        node: Any = self.raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads((PROFILE_DIR / "schema.json").read_text())


def _field_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def load_profile(path: str | Path, chip_schema: dict | None = None) -> Profile:
    """Load and validate one profile file; raise ProfileError naming the file and field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror}).") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ProfileError(f"{path}:{where} is not valid YAML; fix the syntax.") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a YAML mapping of fields.")
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(data),
                    key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise ProfileError(f"{path}: field '{_field_path(err)}': {err.message} "
                           f"(see backends/profiles/schema.json).")
    if chip_schema is not None:
        errors = list(jsonschema.Draft202012Validator(chip_schema).iter_errors(data.get("chip", {})))
        if errors:
            err = errors[0]
            raise ProfileError(f"{path}: field 'chip.{_field_path(err)}': {err.message}.")
    if data["name"] != path.stem:
        raise ProfileError(f"{path}: field 'name' is '{data['name']}' but the file is "
                           f"'{path.name}'; they must match.")
    return Profile(name=data["name"], vendor=data["vendor"], family=data["family"],
                   description=data["description"], target=dict(data["target"]),
                   dtypes=tuple(data["dtypes"]), precisions=tuple(data["precisions"]),
                   raw=data, path=path)


def profile_paths(directory: Path | None = None) -> list[Path]:
    directory = directory or PROFILE_DIR
    return sorted(p for p in directory.glob("*.yaml"))
