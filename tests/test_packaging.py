"""The wheel must contain every subpackage.

An editable install finds any folder on disk, so a subpackage missing from pyproject's explicit
``packages`` list only shows up as ModuleNotFoundError in a clean (non-editable) install, i.e. in
CI. This test catches it in a developer's checkout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the check needs it only once

ROOT = Path(__file__).resolve().parents[1]


def _declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(cfg["packages"]), cfg["package-dir"]


def test_every_subpackage_is_listed_in_pyproject():
    packages, package_dir = _declared()
    on_disk = set()
    for name, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([name, *rel.parts]))
    missing = sorted(on_disk - packages)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    stale = sorted(packages - on_disk)
    assert not stale, f"listed in pyproject.toml but not on disk: {stale}"


def test_every_data_file_is_package_data():
    """Profiles, schemas and expected-failure lists are read at run time from the installed
    package; a file that no package-data glob matches is missing from the wheel."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir, data = cfg["package-dir"], cfg.get("package-data", {})
    unlisted = []
    for name, folder in package_dir.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".yaml", ".yml", ".json", ".jsonl") or "__pycache__" in path.parts:
                continue
            owner = path.parent
            while not (owner / "__init__.py").exists():
                owner = owner.parent
            package = ".".join([name, *owner.relative_to(ROOT / folder).parts])
            rel = path.relative_to(owner)
            if not any(rel.match(glob) for glob in data.get(package, [])):
                unlisted.append(f"{package}: {rel}")
    assert not unlisted, f"add to [tool.setuptools.package-data]: {unlisted}"
