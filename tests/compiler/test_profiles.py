"""Every shipped profile validates; broken ones fail with the file and the field named."""

from __future__ import annotations

import shutil

import pytest
import yaml

from anychip.compiler.errors import ProfileError
from anychip.compiler.profiles import PROFILE_DIR, load_profile, profile_paths
from anychip.compiler.registry import backends, profiles

REQUIRED = ["cpu", "nvidia-a100", "nvidia-a800", "nvidia-h100", "nvidia-h800", "nvidia-h20",
            "nvidia-l20", "nvidia-rtx4090", "ascend-910b", "ascend-910", "ascend-310p",
            "hygon-k100", "hygon-z100", "mthreads-s4000", "metax-c500", "iluvatar-bi-v150",
            "biren-br104"]


@pytest.mark.parametrize("path", profile_paths(), ids=lambda p: p.stem)
def test_shipped_profile_is_valid(path):
    family = yaml.safe_load(path.read_text())["family"]
    profile = load_profile(path, getattr(backends().get(family), "chip_schema", None))
    assert profile.name == path.stem
    assert profile.family in backends(), f"no installed backend of family '{profile.family}'"
    assert profile.default_precision in profile.precisions
    for dotted in profile.uncertain:  # every [U] mark must point at a real field
        assert profile.get(dotted) is not None or dotted.split(".")[0] in profile.raw, dotted


def test_all_required_profiles_are_registered():
    missing = sorted(set(REQUIRED) - set(profiles()))
    assert not missing, f"profiles missing: {missing}"


def _broken(tmp_path, mutate, name="cpu"):
    data = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    mutate(data)
    path = tmp_path / f"{data.get('name', name)}.yaml"
    path.write_text(yaml.safe_dump(data))
    shutil.copy(PROFILE_DIR / "schema.json", tmp_path / "schema.json")
    return path


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("vendor"), "(top level)"),
    # any family name an installed package may register is valid; a malformed one is not
    (lambda d: d.update(family="Not a family!"), "family"),
    (lambda d: d.update(memory={"size_gb": "lots", "bandwidth_gbs": 1}), "memory.size_gb"),
    (lambda d: d.update(precisions=[]), "precisions"),
    (lambda d: d.update(dtypes=["float32", "complex128"]), "dtypes.1"),
    (lambda d: d.update(surprise=1), "(top level)"),
])
def test_broken_profile_names_file_and_field(tmp_path, mutate, field):
    path = _broken(tmp_path, mutate)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    message = str(err.value)
    assert str(path) in message and f"field '{field}'" in message
    assert "\n" not in message


def test_name_must_match_file(tmp_path):
    path = _broken(tmp_path, lambda d: None)
    renamed = path.with_name("other.yaml")
    path.rename(renamed)
    with pytest.raises(ProfileError, match="other.yaml.*'name'"):
        load_profile(renamed)


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(path)
