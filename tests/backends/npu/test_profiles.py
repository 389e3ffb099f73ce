"""The Ascend profiles: the npu chip schema accepts them and names the field of a broken one."""

from __future__ import annotations

import shutil

import pytest
import yaml

from anychip.backends.npu.chip import CHIP_SCHEMA, Chip
from anychip.compiler.errors import ProfileError
from anychip.compiler.profiles import PROFILE_DIR, load_profile
from anychip.compiler.registry import get_profile


def test_profile_has_the_chip_facts(npu_target):
    profile = get_profile(npu_target)
    chip = Chip.of(profile)
    assert set(chip.buffers) == {"L1", "L0A", "L0B", "L0C", "UB"}
    assert chip.fractal("float16") == (16, 16, 16) and chip.fractal("int8") == (16, 16, 32)
    assert chip.c0("float16") == 16 and chip.c0("int8") == 32 and chip.alignment == 32
    assert chip.vector_lanes("float16") == 128 and chip.vector_lanes("float32") == 64
    assert chip.default_precision_mode() == "force_fp16"
    for op, dtypes in chip.ai_core_ops.items():
        assert not {"int64", "float64"} & set(dtypes), op      # never on the AI Core
    assert ("bfloat16" in chip.cube_dtypes) == ("bf16" in profile.precisions)
    assert profile.uncertain and all(profile.get(p) is not None for p in profile.uncertain)


def _write(tmp_path, name, mutate):
    data = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    mutate(data["chip"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    shutil.copy(PROFILE_DIR / "schema.json", tmp_path / "schema.json")
    return path


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["buffers"].update(L0A="64K"), "chip.buffers.L0A"),
    (lambda c: c["buffers"].pop("UB"), "chip.buffers"),
    (lambda c: c["ai_core_ops"].update(Gather=["float32", "int64"]), "chip.ai_core_ops.Gather.1"),
    (lambda c: c["precision_mode_default"].update(inference="fastest"),
     "chip.precision_mode_default.inference"),
    (lambda c: c.pop("cube"), "chip.(top level)"),
])
def test_broken_chip_section_names_the_field(tmp_path, mutate, field):
    path = _write(tmp_path, "ascend-910b", mutate)
    with pytest.raises(ProfileError) as err:
        load_profile(path, CHIP_SCHEMA)
    assert str(path) in str(err.value) and f"field '{field}'" in str(err.value)
