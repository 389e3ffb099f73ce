"""`anychip tune --tracker`: MetaSchedule's RPC runner measures the candidates on a farm
server; the records keep the exact target key and the next compile here applies them."""

from __future__ import annotations

import json
import os

import pytest

from tests.compiler.test_tuning import gated_model


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ANYCHIP_FARM_TUNE_TEST"),
                    reason="minutes of MetaSchedule (10 min on a loaded 2-core machine): over "
                           "the CI budget; set ANYCHIP_FARM_TUNE_TEST=1 to run it")
def test_tune_on_the_farm_makes_records_the_compile_applies(local_farm, tmp_path, monkeypatch,
                                                           capsys):
    import anychip
    from anychip.compiler.cli.main import main
    from anychip.compiler.tuning import database as tdb

    db = tmp_path / "tuning.jsonl"
    monkeypatch.setenv("ANYCHIP_TUNING_DB", str(db))
    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tdb, "SHIPPED", tmp_path / "no-shipped-data")
    # Abs: a sigmoid or tanh kernel is tuned in its libm form, which a compile with fast_math
    # (the default) does not build, so its record would never apply
    path = gated_model(tmp_path, "Abs")
    assert main(["tune", str(path), "--target", "cpu", "--trials", "2", "--json", "--db",
                 str(db), "--tracker", local_farm.address]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measured_on"] == f"the farm's 'cpu' servers (tracker {local_farm.address})"
    assert summary["trials"] == 2 and summary["records_added"] >= 1
    art = anychip.compile(path, target="cpu")
    assert art.report["tuning"]["kernels_tuned"] >= 1     # same target key as a local compile
    assert anychip.verify(path, target="cpu").passed


def test_tune_for_a_key_without_server_is_exit_3(local_farm, linear_path, capsys):
    from anychip.compiler.cli.main import main

    assert main(["tune", str(linear_path), "--target", "nvidia-h100", "--trials", "1",
                 "--tracker", local_farm.address]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no 'nvidia-h100' server" in err
