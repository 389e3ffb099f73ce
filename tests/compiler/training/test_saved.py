"""save/load round trip: the same state and, from there, the same steps; damage is refused."""

from __future__ import annotations

import numpy as np
import pytest

import anychip
from anychip.compiler.errors import AnychipError

from .torch_models import batches, make_model


@pytest.fixture(scope="module")
def trained():
    model, shape, _ = make_model("resnet")
    data = batches(shape, 5, 4)
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       optimizer=anychip.optim.Adam(lr=0.01))
    for x, y in data[:2]:
        trainer.step(x, y)
    return trainer, data


def test_round_trip_continues_identically(trained, tmp_path):
    trainer, data = trained
    path = trainer.save(tmp_path / "resnet.train")
    loaded = anychip.load_training(path)
    assert loaded.steps == trainer.steps == 2
    before = trainer.state_dict()
    for key, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert int(before["stem.1.num_batches_tracked"]) == 2
    # the optimizer state came along: the next steps agree bit for bit
    for x, y in data[2:]:
        assert loaded.step(x, y) == trainer.step(x, y)
    for key, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value, trainer.state_dict()[key], err_msg=key)


def test_load_state_dict_round_trip_and_checks(trained):
    trainer, _ = trained
    state = trainer.state_dict()
    state["fc.bias"] = np.full_like(state["fc.bias"], 0.5)
    trainer.load_state_dict(state)
    np.testing.assert_array_equal(trainer.state_dict()["fc.bias"], 0.5)
    with pytest.raises(AnychipError, match="missing fc.bias"):
        trainer.load_state_dict({k: v for k, v in state.items() if k != "fc.bias"})
    bad = dict(state, **{"fc.bias": np.zeros(3, np.float32)})
    with pytest.raises(AnychipError, match="'fc.bias' is float32\\[3\\]"):
        trainer.load_state_dict(bad)


def test_existing_destination_and_damaged_files_are_refused(trained, tmp_path):
    trainer, _ = trained
    path = trainer.save(tmp_path / "t.train")
    with pytest.raises(AnychipError, match="already exists"):
        trainer.save(path)
    trainer.save(path, force=True)
    state = path / "state.npz"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(AnychipError, match="state.npz' does not match its sha256"):
        anychip.load_training(path)
    with pytest.raises(AnychipError, match="no such saved trainer"):
        anychip.load_training(tmp_path / "absent")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
