"""The tuning database: exact-target keying, corrupt lines skipped, digest for the cache key."""

from __future__ import annotations

import json

import pytest

from anychip.compiler.tuning import database as tdb


@pytest.fixture(autouse=True)
def user_db(tmp_path, monkeypatch):
    path = tmp_path / "tuning.jsonl"
    monkeypatch.setenv("ANYCHIP_TUNING_DB", str(path))
    monkeypatch.setattr(tdb, "SHIPPED", tmp_path / "no-shipped-data")
    return path


def _record(target_json: str):
    """A real MetaSchedule record: a small elementwise kernel with its loop vectorized (TVM's
    databases ignore records whose trace is empty)."""
    import tvm
    from tvm import s_tir, te
    from tvm.s_tir import meta_schedule as ms

    a = te.placeholder((64,), name="a")
    b = te.compute((64,), lambda i: a[i] * 2.0, name="b")
    mod = tvm.IRModule({"main": te.create_prim_func([a, b])})
    sch = s_tir.Schedule(mod)
    sch.vectorize(sch.get_loops(sch.get_sblock("b"))[0])
    workload = ms.database.Workload(mod)
    target = tvm.target.Target(json.loads(target_json))
    return mod, ms.database.TuningRecord(sch.trace, workload, [1e-5], target)


CPU_A = '{"kind":"llvm","num-cores":2,"mcpu":"rocketlake"}'
CPU_B = '{"kind":"llvm","num-cores":8,"mcpu":"skylake-avx512"}'


def test_records_apply_only_to_their_exact_target(user_db):
    _, rec = _record(CPU_A)
    tdb.TuningDatabase(user_db).append([tdb.entry(CPU_A, rec)])
    assert len(tdb.records_for(CPU_A)) == 1
    assert tdb.records_for(CPU_B) == []
    assert tdb.meta_schedule_database(CPU_B) is None
    assert tdb.database_digest(CPU_B) == "none"


def test_meta_schedule_database_finds_the_record(user_db):
    mod, rec = _record(CPU_A)
    tdb.TuningDatabase(user_db).append([tdb.entry(CPU_A, rec)])
    db = tdb.meta_schedule_database(CPU_A)
    import tvm

    found = db.query_tuning_record(mod, tvm.target.Target(json.loads(CPU_A)), "main")
    assert found is not None and [float(s) for s in found.run_secs] == [1e-5]


def test_corrupt_and_truncated_lines_are_skipped_with_a_warning(user_db):
    _, rec = _record(CPU_A)
    good = json.dumps(tdb.entry(CPU_A, rec))
    user_db.write_text("\n".join([good, "{not json", json.dumps({"format": 99}), good[:40]]))
    with pytest.warns(tdb.TuningWarning) as caught:
        assert len(tdb.TuningDatabase(user_db).lines(CPU_A)) == 1
    assert [str(w.message).split(":")[1] for w in caught] == ["2", "3", "4"]


def test_append_after_a_truncated_line_starts_a_new_line(user_db):
    _, rec = _record(CPU_A)
    user_db.write_text('{"format": 1, "tar')          # a writer killed mid-line
    tdb.TuningDatabase(user_db).append([tdb.entry(CPU_A, rec)])
    with pytest.warns(tdb.TuningWarning):
        assert len(tdb.records_for(CPU_A)) == 1


def test_digest_changes_with_the_records_for_the_target(user_db):
    _, rec = _record(CPU_A)
    db = tdb.TuningDatabase(user_db)
    assert tdb.database_digest(CPU_A) == "none"
    db.append([tdb.entry(CPU_A, rec)])
    first = tdb.database_digest(CPU_A)
    db.append([tdb.entry(CPU_B, rec)])
    assert tdb.database_digest(CPU_A) == first        # another target's record: no change
    db.append([tdb.entry(CPU_A, rec)])
    assert tdb.database_digest(CPU_A) != first


@pytest.mark.slow
def test_tune_then_compile_applies_the_records(user_db, tmp_path, monkeypatch, capsys):
    """End to end (minutes on 2 cores): `anychip tune` measures candidates for the kernels
    TVM compiles, commits them for this exact target, and the next compile applies them and
    still matches ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper

    import anychip
    from anychip.compiler.cli.main import main as cli

    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path / "cache"))
    # Pow(x, 2): tune must see the module compile sees (after the target-neutral passes turn
    # it into x*x), or its records never apply
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["m"]),
             helper.make_node("Pow", ["x", "two"], ["p"]), helper.make_node("Add", ["m", "p"], ["y"])]
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(nodes, "swish",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 256])],
                              [two])
    path = tmp_path / "swish.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert cli(["tune", str(path), "--target", "cpu", "--trials", "2", "--json",
                "--db", str(user_db)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 2 and summary["database"] == str(user_db)
    art = anychip.compile(path, target="cpu")
    assert summary["records_added"] >= 1
    assert art.report["tuning"]["records"] == summary["records_added"]
    assert art.report["tuning"]["kernels_tuned"] >= 1   # the records match compiled kernels
    report = anychip.verify(path, target="cpu")
    assert report.passed, report.summary()
