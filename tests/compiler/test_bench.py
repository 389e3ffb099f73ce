"""`anychip bench`: fields, ratios from the same run, FLOP counting, the cached peak, exit codes.
No timing assertions: speed is for benchmarks, not tests."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from anychip.compiler import bench as bench_mod
from anychip.compiler.cli.main import main as cli

from ..conftest import make_linear_model


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ANYCHIP_NO_CACHE", raising=False)


@pytest.fixture
def linear_file(tmp_path):
    path = tmp_path / "linear.onnx"
    onnx.save(make_linear_model(), str(path))
    return path


def _conv_matmul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w")
    g = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "g")
    m = numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "m")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["c", "w2"], ["d"], group=4),
             helper.make_node("Gemm", ["a", "g"], ["e"], transB=1),
             helper.make_node("MatMul", ["b", "m"], ["f"])]
    w2 = numpy_helper.from_array(rng.standard_normal((8, 4, 1, 1)).astype(np.float32), "w2")
    graph = helper.make_graph(
        nodes, "flops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 8]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3, 6])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "def"], [w, w2, g, m])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def test_flops_of_conv_gemm_matmul_from_inferred_shapes():
    conv1 = 2 * (16 * 4 * 4) * (3 * 3 * 3)        # 16x4x4 outputs, Cin*kh*kw each
    conv2 = 2 * (8 * 4 * 4) * (4 * 1 * 1)          # groups=4: Cin/groups = 4
    gemm = 2 * (4 * 8) * 8
    matmul = 2 * (2 * 3 * 5) * 6
    assert bench_mod.count_flops(_conv_matmul_model()) == conv1 + conv2 + gemm + matmul


def test_interleaved_timing_rotates_the_order():
    calls = []
    engines = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    samples = bench_mod.time_interleaved(engines, warmup=1, repeat=3, pause=0, block=1)
    assert calls[:3] == ["a", "b", "c"]                       # warm-up, once each
    # each round: a block per engine (one after-idle call, then `block` steady calls)
    assert calls[3:] == ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a",
                         "c", "c", "a", "a", "b", "b"]
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}


def test_blocks_time_after_idle_apart_from_steady_state_and_stop_at_repeat(monkeypatch):
    """The first call after the pause is the after-idle sample; only the calls behind it in
    the block are steady samples, and the last round is cut to `repeat` steady samples."""
    state = {"now": 0.0, "idle": False, "calls": 0}

    class FakeTime:
        @staticmethod
        def perf_counter():
            return state["now"]

        @staticmethod
        def sleep(seconds):
            state["idle"] = True

    def engine():   # a call after idle takes 10 s on the fake clock, the others 1 s
        state["now"] += 10.0 if state["idle"] else 1.0
        state["idle"] = False
        state["calls"] += 1

    monkeypatch.setattr(bench_mod, "time", FakeTime)
    timings = bench_mod.time_rounds({"x": engine}, warmup=0, repeat=5, pause=0.05, block=2)
    assert timings.steady == {"x": [1.0] * 5}
    assert timings.after_idle == {"x": [10.0] * 3}
    assert state["calls"] == 8                                # 3 blocks: 1+2, 1+2, 1+1


def test_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    measured = []

    def fake_measure(threads):
        measured.append(threads)
        return 123.0

    assert bench_mod.peak_gflops(2, measure=fake_measure) == 123.0
    assert bench_mod.peak_gflops(2, measure=fake_measure) == 123.0
    assert measured == [2]
    assert (tmp_path / "cache" / "peak_gflops.json").is_file()


def test_bench_json_has_the_fields_and_same_run_ratios(linear_file, capsys, monkeypatch):
    monkeypatch.setattr(bench_mod, "measure_peak_gflops", lambda threads, **_: 50.0)
    rc = cli(["bench", str(linear_file), "--target", "cpu", "--json", "--warmup", "1",
              "--repeat", "3"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"] == "cpu" and out["how"] == "executed"
    lat = out["latency_ms"]
    assert set(lat) == {"median", "min", "max"} and lat["min"] <= lat["median"] <= lat["max"]
    assert set(out["ratio"]) == {"ort", "torch"}
    ort = out["engines"]["ort"]
    assert out["ratio"]["ort"] == pytest.approx(lat["median"] / ort["median"], rel=1e-9)
    assert {"anychip", "ort"} <= set(out["after_idle_ms"])   # each block's first call
    assert all(v > 0 for v in out["after_idle_ms"].values())
    # an ONNX file has no torch module; without onnx2torch the engine is n/a, with the reason
    try:
        import onnx2torch  # noqa: F401
    except ImportError:
        assert out["ratio"]["torch"] is None and out["engines"]["torch"] is None
        assert "onnx2torch" in out["notes"]["torch"]
    assert out["gflop"] == pytest.approx(2 * 2 * 8 * 4 / 1e9)
    assert out["peak_gflops"] == 50.0
    assert out["peak_pct"] == pytest.approx(100 * out["gflops"] / 50.0)
    assert out["repeat"] == 3 and out["warmup"] == 1


def test_bench_table_names_every_engine(linear_file, capsys):
    assert cli(["bench", str(linear_file), "--against", "ort", "--repeat", "2",
                "--warmup", "0", "--no-peak"]) == 0
    text = capsys.readouterr().out
    assert "anychip" in text and "ort" in text and "(anychip/ort)" in text


def test_bench_of_a_compiles_only_target_exits_3(linear_file, capsys):
    from anychip.compiler.registry import targets

    compile_only = [t.name for t in targets() if t.execution == "compiles-only"]
    if not compile_only:
        pytest.skip("no compiles-only target is installed")
    assert cli(["bench", str(linear_file), "--target", compile_only[0]]) == 3
    assert "cannot run here" in capsys.readouterr().err


def test_bench_bad_engine_is_a_usage_error(linear_file, capsys):
    assert cli(["bench", str(linear_file), "--against", "tensorrt"]) == 2
    assert "engines are ort, torch" in capsys.readouterr().err


def test_plot_needs_matplotlib_or_writes_a_chart(linear_file, tmp_path, capsys):
    out = tmp_path / "bench.png"
    rc = cli(["bench", str(linear_file), "--against", "ort", "--repeat", "2", "--warmup", "0",
              "--no-peak", "--plot", str(out)])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert rc == 2 and "pip install matplotlib" in capsys.readouterr().err
        assert not out.exists()
    else:
        assert rc == 0 and out.read_bytes()[:4] == b"\x89PNG"


def test_other_engines_run_where_the_target_runs(monkeypatch):
    from anychip.backends.cuda import backend as cuda_backend
    from anychip.compiler.registry import get_backend, get_profile

    def device(name):
        return get_backend(get_profile(name)).bench_device(get_profile(name))

    assert device("cpu") == "cpu" and device("ascend-910b") == "cpu"   # npu: simulated on host
    monkeypatch.setattr(cuda_backend, "cuda_device", lambda: (False, "no driver"))
    assert device("nvidia-h100") == "cpu"   # (bench refuses it: cannot execute here)
    monkeypatch.setattr(cuda_backend, "cuda_device", lambda: (True, "1 CUDA device(s)"))
    assert device("nvidia-h100") == "cuda"


def test_ort_on_a_cuda_target_says_which_provider_it_used(linear_file):
    import onnxruntime as ort

    from anychip.compiler.frontend import load_model

    _, note = bench_mod._ort_engine(load_model(str(linear_file), None, {}), 1, "cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert note == "CUDAExecutionProvider"
    else:   # a CPU build of onnxruntime: the ratio must not pass for GPU against GPU
        assert note.startswith("CPUExecutionProvider") and "GPU against CPU" in note


def test_batch_mode_times_every_engine_at_the_batch(linear_file, capsys):
    """--batch 6 on a batch-2 file: compiled at 6 rows (the FLOPs say so), ORT fed the same."""
    assert cli(["bench", str(linear_file), "--batch", "6", "--against", "ort", "--json",
                "--repeat", "1", "--warmup", "0", "--no-peak"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch"] == 6
    assert out["gflop"] == pytest.approx(2 * 6 * 8 * 4 / 1e9)
    assert out["engines"]["ort"] is not None
    assert cli(["bench", str(linear_file), "--batch", "0", "--against", "ort"]) == 2
    assert "--batch must be" in capsys.readouterr().err


@pytest.mark.slow   # exports the zoo MLP twice (batch 2 and 6)
def test_batch_mode_exports_a_torch_built_zoo_model_at_the_batch(capsys):
    """The zoo's torch models bake their export batch into reshapes: --batch exports again at
    the batch, and torch eager runs the same module on the same batch."""
    results = {}
    for batch in (2, 6):
        result = bench_mod.bench("zoo:mlp", against=("ort", "torch"), warmup=0, repeat=1,
                                 peak=False, batch=batch)
        results[batch] = result
    assert results[6].batch == 6
    assert results[6].gflop == pytest.approx(3 * results[2].gflop)
    assert results[6].engines["torch"] is not None and results[6].engines["ort"] is not None
