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
    # it into x*x), or its records never apply. Abs, not Tanh or Sigmoid: a kernel holding
    # exp, erf, sigmoid or tanh is tuned in its libm form, which a compile with fast_math (the
    # default) does not build
    nodes = [helper.make_node("Abs", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["m"]),
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


@pytest.mark.slow
def test_tune_takes_kernels_that_fast_math_rewrites(user_db, tmp_path, capsys):
    """SiLU (Sigmoid, Mul): fast_math, on by default, makes its sigmoid a polynomial that
    MetaSchedule cannot estimate FLOPs of; tune lowers with fast_math off, so it tunes (the
    libm form) instead of failing."""
    from anychip.compiler.cli.main import main as cli

    path = gated_model(tmp_path, "Sigmoid")
    assert cli(["tune", str(path), "--target", "cpu", "--trials", "2", "--json",
                "--db", str(user_db)]) == 0
    assert json.loads(capsys.readouterr().out)["records_added"] >= 1


def gated_model(tmp_path, gate: str):
    """x * gate(x) on a [64, 256] input, saved as ONNX: one elementwise kernel to tune (also
    used by tests/compiler/farm/test_tune.py)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node(gate, ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    graph = helper.make_graph(nodes, "gated",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 256])])
    path = tmp_path / f"{gate.lower()}_gated.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# -- the shipped database (compiler/tuning/ship.py) -------------------------------------------
SHIPPED_DATA = tdb.SHIPPED            # the package's own folder (the fixture hides it)


def test_ship_keeps_the_fastest_record_per_kernel_and_target(tmp_path):
    from anychip.compiler.tuning import ship

    lines = []
    for target, secs in ((CPU_A, 2e-5), (CPU_A, 1e-5), (CPU_A, 3e-5), (CPU_B, 4e-5)):
        _, rec = _record(target)
        line = tdb.entry(target, rec)
        line["record"][1] = [secs]
        lines.append(line)
    db = tmp_path / "run.jsonl"
    tdb.TuningDatabase(db).append(lines)
    best = ship.best_per_kernel([db])
    assert sorted((b["target"], b["record"][1]) for b in best) == [(CPU_A, [1e-5]),
                                                                    (CPU_B, [4e-5])]


def test_ship_keeps_a_record_only_when_it_beats_the_default_schedule(monkeypatch):
    from anychip.compiler.tuning import ship

    _, rec = _record(CPU_A)
    line = tdb.entry(CPU_A, rec)
    timings = iter([("b", 10.0, 9.9), ("b", 10.0, 5.0)])
    monkeypatch.setattr(ship, "measure", lambda _line: next(timings))
    lines = [line, line, tdb.entry(CPU_B, rec)]
    kept, decisions = ship.select(lines, CPU_A, progress=lambda _: None)
    assert [d.shipped for d in decisions] == [False, True, True]
    assert decisions[2].default_us is None          # another target: kept, not measured here
    assert [k["target"] for k in kept] == [CPU_A, CPU_B]


def test_ship_measures_both_schedules_of_a_real_record_on_this_host():
    """The record's kernel and the default schedule's are built, checked to compute the same
    values, and timed on this host."""
    from anychip.compiler.registry import get_backend, get_profile
    from anychip.compiler.tuning import ship

    profile = get_profile("cpu")
    host = str(get_backend(profile).target(profile))
    _, rec = _record(host)
    name, default_us, tuned_us = ship.measure(tdb.entry(host, rec), rounds=1)
    assert name == "b" and default_us > 0 and tuned_us > 0


def test_shipped_databases_hold_one_loadable_record_per_kernel(recwarn):
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    files = sorted(SHIPPED_DATA.glob("*.jsonl"))
    assert files, f"no tuning database ships in {SHIPPED_DATA}"
    for path in files:
        assert path.stat().st_size < 1 << 20, f"{path}: over 1 MiB; ship the best records only"
        lines = tdb.TuningDatabase(path).lines()
        assert lines and not [w for w in recwarn if issubclass(w.category, tdb.TuningWarning)]
        keys = [(line["target"], line["workload"][0]) for line in lines]
        assert len(keys) == len(set(keys)), f"{path}: more than one record for a kernel"
        for line in lines:
            tvm.target.Target(json.loads(line["target"]))
            workload = ms.database.Workload.from_json(line["workload"])
            record = ms.database.TuningRecord.from_json(line["record"], workload)
            record.trace.apply_to_schedule(s_tir.Schedule(workload.mod), remove_postproc=False)


@pytest.mark.slow
def test_shipped_records_apply_to_resnet50_on_the_cpu_kind_they_were_tuned_on(monkeypatch):
    """(The compile cache is the session's: the zoo tests compile the same artifact.)"""
    import anychip
    from anychip.compiler.registry import get_backend, get_profile

    monkeypatch.setattr(tdb, "SHIPPED", SHIPPED_DATA)
    profile = get_profile("cpu")
    host = str(get_backend(profile).target(profile))
    if not tdb.records_for(host):
        pytest.skip(f"no shipped tuning records for this host's target {host}")
    art = anychip.compile("zoo:resnet50", target="cpu")
    assert art.report["tuning"]["kernels_tuned"] >= 1


def test_ship_refuses_missing_input_and_existing_output_with_exit_2(tmp_path, capsys):
    from anychip.compiler.tuning import ship

    assert ship.main([str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "no such tuning database" in capsys.readouterr().err
    db, out = tmp_path / "run.jsonl", tmp_path / "out.jsonl"
    db.write_text("")
    out.write_text("keep me\n")
    assert ship.main([str(db), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep me\n"
    assert ship.main([str(db), "-o", str(out), "--force"]) == 0 and out.read_text() == ""


def test_the_cheap_stack_gives_what_inspect_stack_gives():
    """compiler/tuning/intrinsics.py swaps inspect.stack for a version without the sys.modules
    scans while TVM's tensor intrinsics import: TVM's parser reads the frames, their functions
    and the lines, which must be the same."""
    import inspect

    from anychip.compiler.tuning.intrinsics import _stack_without_module_lookup

    def both():
        return [inspect.stack(), _stack_without_module_lookup()]   # one line: same lineno

    slow, fast = both()
    assert len(slow) == len(fast)
    for s, f in zip(slow, fast):
        assert (f.frame, f.function, f.lineno) == (s.frame, s.function, s.lineno)
        assert (f.code_context or [""])[0].strip() == (s.code_context or [""])[0].strip()
