"""`anychip bench --profile` (compiler/profiler.py): measured where the target executes, from
the backend's cost model (marked estimated) where it simulates, refused where neither."""

from __future__ import annotations

import json

import pytest
from anychip.compiler.cli.main import main
from anychip.compiler.errors import NotExecutable
from anychip.compiler.profiler import HOST, profile_model


@pytest.mark.usefixtures("library_gemms")   # the MLP's small GEMMs on the library
def test_cpu_profile_sees_every_library_call_and_adds_up():
    prof, events = profile_model("zoo:mlp", "cpu", runs=5, dispatch=True)
    assert prof.how == "executed"
    gemm = [e for e in prof.entries if e.kind == "library GEMM"]
    assert sum(e.calls for e in gemm) == 3            # the zoo MLP's three Gemm nodes
    assert all(e.gflops and e.gflops > 0 for e in gemm)
    # one run, whole (the median by wall time): its calls and host overhead are the run,
    # whatever stalls this VM put in other runs
    parts = sum(e.total_ms for e in prof.entries) + prof.totals[HOST]
    assert parts == pytest.approx(prof.run_ms, rel=1e-9)
    assert len(events) == sum(e.calls for e in prof.entries)
    assert sum(ev["dur"] for ev in events) == pytest.approx(
        1e3 * sum(e.total_ms for e in prof.entries), rel=1e-3)
    assert all(ev["ph"] == "X" and ev["dur"] >= 0 for ev in events)


def test_npu_profile_is_the_cost_models_estimate():
    prof, events = profile_model("zoo:mlp", "ascend-910b")
    assert prof.how.startswith("estimated")
    assert {e.kind for e in prof.entries} == {"cube unit", "vector unit"}
    assert sum(e.calls for e in prof.entries) == 5     # 3 Gemm on the cube, 2 Relu on vector
    assert sum(prof.totals.values()) == pytest.approx(prof.run_ms, rel=1e-3)
    assert len(events) == 5


def test_cli_profile_json_and_trace(tmp_path, capsys):
    trace = tmp_path / "trace.json"
    assert main(["bench", "zoo:mlp", "--target", "cpu", "--profile", "--repeat", "2",
                 "--json", "--trace", str(trace)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["how"] == "executed" and out["entries"]
    events = json.loads(trace.read_text())["traceEvents"]
    assert {ev["name"] for ev in events} >= {e["name"] for e in out["entries"]}
    assert main(["bench", "zoo:mlp", "--target", "cpu", "--profile", "--trace",
                 str(trace)]) == 2                   # exists, no --force


def test_compile_only_target_without_estimate_is_exit_3():
    with pytest.raises(NotExecutable, match="nothing to profile"):
        profile_model("zoo:mlp", "biren-br104")


@pytest.mark.usefixtures("library_gemms")
def test_library_calls_on_one_input_are_entries_of_their_own():
    """A 1x1 and a 3x3 convolution of the same input: two entries named by their weights,
    whose FLOPs (GFLOP/s x time) are in the ratio of their windows, 9."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((32, 16, k, k)).astype(np.float32),
                                     f"w{k}") for k in (1, 3)]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]),
             helper.make_node("Conv", ["x", "w3"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    graph = helper.make_graph(
        nodes, "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 20, 20])], inits)
    prof, _ = profile_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                            "cpu", runs=3, dispatch=True)
    convs = {e.name.rsplit(" * ", 1)[-1]: e for e in prof.entries if e.kind == "library convolution"}
    assert set(convs) == {"32x16x1x1", "32x16x3x3"}
    assert all(e.calls == 1 and e.gflops for e in convs.values())
    flops = {k: e.gflops * e.total_ms for k, e in convs.items()}
    assert flops["32x16x3x3"] / flops["32x16x1x1"] == pytest.approx(9.0)


@pytest.mark.usefixtures("library_gemms")
def test_bench_takes_the_target_familys_options(capsys):
    """`bench --profile --dispatch false`: the compile option reaches the timed artifact (no
    library call left); another family's option is one line, exit 2."""
    assert main(["bench", "zoo:mlp", "--target", "cpu", "--profile", "--repeat", "2",
                 "--json", "--dispatch", "true"]) == 0
    kinds = {e["kind"] for e in json.loads(capsys.readouterr().out)["entries"]}
    assert "library GEMM" in kinds
    assert main(["bench", "zoo:mlp", "--target", "cpu", "--profile", "--repeat", "2",
                 "--json", "--dispatch", "false"]) == 0
    kinds = {e["kind"] for e in json.loads(capsys.readouterr().out)["entries"]}
    assert not any(k.startswith("library") for k in kinds)
    assert main(["bench", "zoo:mlp", "--target", "cpu", "--precision-mode", "force_fp16"]) == 2
    assert "npu" in capsys.readouterr().err


def test_tvm_convolution_with_a_polynomial_epilogue_has_its_flops():
    """A convolution whose SiLU epilogue is fast_math's polynomial (a Let TVM's FLOP estimate
    cannot read) still reports GFLOP/s: its multiply-adds, 2 x out x Cin x kh x kw."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Mul", ["c", "s"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv_silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 24, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 24, 24])], [w])
    prof, _ = profile_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                            "cpu", runs=3, dispatch=False, winograd=False)   # the direct kernel
    convs = [e for e in prof.entries if e.name.startswith("fused_conv2d")]
    assert len(convs) == 1 and convs[0].gflops, [(e.name, e.gflops) for e in prof.entries]
    flops = convs[0].gflops * 1e9 * convs[0].total_ms / 1e3
    assert flops == pytest.approx(2 * 24 * 24 * 32 * 16 * 9, rel=1e-6)
