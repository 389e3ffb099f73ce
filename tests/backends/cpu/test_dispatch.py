"""Library dispatch on the cpu backend: the same numbers as TVM's own kernels, offloaded calls
counted, artifacts that load and run in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import anychip
from anychip.compiler.dispatch import all_patterns
from anychip.compiler.errors import AnychipError
from anychip.compiler.inputs import random_inputs

from .models import attention_block, conv_net, residual_relu_dense, transposed_matmuls


def _run(art, seed=0):
    feed = random_inputs(art.inputs, seed)
    return feed, list(art.run(feed).values())


def _compare(model, expected_calls):
    fast = anychip.compile(model, target="cpu", dispatch=True)
    plain = anychip.compile(model, target="cpu", dispatch=False, layout="NCHW")
    assert fast.report["dispatch"]["calls"] == expected_calls
    assert plain.report["dispatch"] is None
    _, got = _run(fast)
    _, want = _run(plain)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        assert np.abs(w).max() > 1e-2          # not a degenerate all-zero output
    return fast


@pytest.mark.usefixtures("library_gemms")
def test_conv_net_library_matches_tvm_kernels():
    fast = _compare(conv_net(), {"anychip.conv2d_bias_relu": 2,
                                 "anychip.conv2d_bias_residual_relu": 1,
                                 "anychip.max_pool2d": 1, "anychip.matmul_bias": 1})
    assert fast.report["layout"] == "NHWC"
    assert fast.manifest["runtime"]["libraries"] == ["torch-cpu"]


@pytest.mark.usefixtures("library_gemms")
def test_dense_layer_with_a_packed_weight_and_residual_relu_matches(monkeypatch):
    """The constant weight goes to oneDNN's linear (packed once); residual and relu after.
    128 x 128 x 128 (4.2 MFLOP) is over SMALL_FLOPS; the small one is a torch.addmm."""
    from anychip.backends.cpu import torch_library

    packed = []
    real = torch_library.TorchCpuLibrary._packed_linear_weight
    monkeypatch.setattr(torch_library.TorchCpuLibrary, "_packed_linear_weight",
                        lambda self, *a: packed.append(a[2]) or real(self, *a))
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    _compare(residual_relu_dense(rows=128, width=128),
             {"anychip.matmul_bias_residual_relu": 1})
    assert packed, "oneDNN's linear did not run"
    packed.clear()
    _compare(residual_relu_dense(), {"anychip.matmul_bias_residual_relu": 1})
    assert not packed   # 12 x 24 x 24: torch.addmm


def test_conv_net_nchw_library_path_matches():
    nchw = anychip.compile(conv_net(), target="cpu", dispatch=True, layout="NCHW")
    nhwc = anychip.compile(conv_net(), target="cpu", dispatch=True)
    assert nchw.report["layout"] == "NCHW"
    assert nchw.report["dispatch"]["calls"] == nhwc.report["dispatch"]["calls"]
    np.testing.assert_allclose(_run(nchw)[1][0], _run(nhwc)[1][0], rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("library_gemms")
def test_attention_block_library_matches_tvm_kernels():
    # Q, K and V projections read the same input: one GEMM on the joined weight and bias
    _compare(attention_block(), {"anychip.matmul": 2, "anychip.matmul_bias": 1,
                                 "anychip.matmul_bias_gelu": 1,
                                 "anychip.matmul_bias_residual": 2, "anychip.softmax": 1,
                                 "anychip.layer_norm": 1})


@pytest.mark.parametrize("reuse_k", [False, True])
@pytest.mark.usefixtures("library_gemms")
def test_parallel_projections_join_into_one_gemm_with_the_same_numbers(reuse_k):
    """Joined QKV gives the separate GEMMs' outputs; when one projection's product is used
    twice, its bias cannot be joined, so the product alone is (three slices, biases after)."""
    import onnx
    from onnx import helper

    model = attention_block()
    if reuse_k:        # k_mm also feeds the output: the k bias add is no longer its only use
        model.graph.node.append(helper.make_node("ReduceSum", ["k_mm"], ["k_sum"], keepdims=0))
        model.graph.output.append(helper.make_tensor_value_info("k_sum", onnx.TensorProto.FLOAT,
                                                                []))
    joined = anychip.compile(model, target="cpu", dispatch=True)
    separate = anychip.compile(model, target="cpu", dispatch=True, combine_matmuls=False)
    calls = joined.report["dispatch"]["calls"]
    assert separate.report["dispatch"]["calls"]["anychip.matmul_bias"] == (2 if reuse_k else 3)
    assert calls.get("anychip.matmul_bias", 0) == (0 if reuse_k else 1)
    assert calls["anychip.matmul"] == (3 if reuse_k else 2)      # + attention's two
    feed, got = _run(joined)
    want = list(separate.run(feed).values())
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert anychip.verify(model, target="cpu", dispatch=True).passed


@pytest.mark.parametrize("build", [conv_net, attention_block])
def test_dispatched_model_matches_onnxruntime(build):
    report = anychip.verify(build(), target="cpu", dispatch=True)
    assert report.passed, report.summary()
    assert report.max_abs < 1e-4


@pytest.mark.slow
def test_transposed_operands_reach_the_library_as_views_and_match_onnxruntime():
    """Transposes of runtime tensors around matmuls (x @ W^T, (g^T @ x)^T, q @ k^T) run no
    transpose kernel: the library reads the operands as transposed views, and a transposed
    product is computed as the product of the transposed operands."""
    import onnxruntime as ort

    from anychip.compiler.tolerances import compare, tolerance_for

    model = transposed_matmuls()
    art = anychip.compile(model, target="cpu", dispatch=True)
    dispatch = art.report["dispatch"]
    assert dispatch["calls"] == {"anychip.matmul": 3}
    # x @ W^T: W; (g^T @ x)^T = x^T @ g: x; q @ k^T: k
    assert dispatch["transposed_operands"] == 3
    feed, got = _run(art, seed=4)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    want = session.run(None, feed)
    tol = tolerance_for("fp32", np.float32)
    for g, w in zip(got, want):
        result = compare(g, w, tol)
        assert result.passed, (result, tol)
        assert np.abs(w).max() > 1e-2


def test_intermediate_outputs_are_not_fused_away():
    """A value the graph returns cannot disappear inside a library epilogue: with the first
    batch norm's output exposed, its conv takes the bias only and relu stays in TVM."""
    from onnx import TensorProto, helper

    model = conv_net()
    extra = "n1"   # BatchNormalization output, consumed by Relu

    model.graph.output.append(helper.make_tensor_value_info(extra, TensorProto.FLOAT,
                                                            [1, 8, 12, 12]))
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()
    assert [o.name for o in report.outputs] == ["y", extra]
    calls = anychip.compile(model, target="cpu", dispatch=True).report["dispatch"]["calls"]
    assert calls["anychip.conv2d_bias"] == 1 and calls["anychip.conv2d_bias_relu"] == 1


def test_artifact_with_library_calls_runs_in_a_fresh_process(tmp_path):
    art = anychip.compile(conv_net(), target="cpu", dispatch=True)
    feed, outs = _run(art, seed=3)
    saved = art.save(tmp_path / "net.anychip")
    np.savez(tmp_path / "in.npz", **feed)
    script = (
        "import sys, numpy as np, anychip\n"
        "a = anychip.load(sys.argv[1])\n"
        "feed = dict(np.load(sys.argv[2]))\n"
        "np.save(sys.argv[3], list(a.run(feed).values())[0])\n")
    subprocess.run([sys.executable, "-c", script, str(saved.path), str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npy")], check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), outs[0], rtol=1e-6, atol=1e-7)


def test_unknown_kernel_library_is_a_clear_error(tmp_path):
    saved = anychip.compile(conv_net(), target="cpu", dispatch=True).save(tmp_path / "net.anychip")
    manifest = saved.path / "manifest.json"
    data = json.loads(manifest.read_text())
    data["runtime"]["libraries"] = ["no-such-library"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(AnychipError, match="kernel library 'no-such-library' is not available"):
        anychip.load(saved.path).run()


def test_pattern_table_is_ordered_longest_first():
    patterns = all_patterns()
    names = [p.name for p in patterns]
    assert len(names) == len(set(names))
    sizes = [p.size for p in patterns]   # ops matched: attention (4 ops) before matmul
    assert sizes == sorted(sizes, reverse=True)
    assert "anychip.conv2d_bias_residual_relu" in names and "anychip.matmul" in names
    assert names.index("anychip.attention") < names.index("anychip.matmul")


def test_thread_count_override(monkeypatch):
    from anychip.compiler.dispatch import run_threads, usable_cores

    monkeypatch.setenv("ANYCHIP_NUM_THREADS", "1")
    assert run_threads(8) == 1
    monkeypatch.delenv("ANYCHIP_NUM_THREADS")
    assert run_threads(10_000) == usable_cores()
    monkeypatch.setenv("ANYCHIP_NUM_THREADS", "zero")
    with pytest.raises(AnychipError, match="ANYCHIP_NUM_THREADS"):
        run_threads(2)


def test_joined_projections_keep_a_float64_weight_dtype():
    """ONNX's DFT cases import as two float64 matmuls of one input: the joined weight must stay
    float64 (relax.const alone would make it float32 and the matmul ill-typed)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 5)), f"w{i}") for i in range(2)]
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"]) for i in range(2)]
    graph = helper.make_graph(
        nodes, "f64", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3, 6])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.DOUBLE, [3, 5]) for i in range(2)],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    report = anychip.verify(model, target="cpu", dispatch=True)
    assert report.passed, report.summary()


def test_parallel_projections_of_a_symbolic_input_join_too():
    """A dynamic batch and sequence do not stop the QKV join: only the weights need static
    shapes (the dynamic DistilBERT made three GEMMs per layer where its static twin made one)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits, nodes = [], []
    for t in "qkv":
        inits += [numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), f"{t}_w"),
                  numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), f"{t}_b")]
        nodes += [helper.make_node("MatMul", ["x", f"{t}_w"], [f"{t}_mm"]),
                  helper.make_node("Add", [f"{t}_mm", f"{t}_b"], [t])]
    nodes += [helper.make_node("Mul", ["q", "k"], ["qk"]), helper.make_node("Add", ["qk", "v"], ["y"])]
    graph = helper.make_graph(
        nodes, "qkv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    dims = {"batch": (1, 4), "seq": (1, 32)}
    art = anychip.compile(model, target="cpu", dispatch=True, dims=dims)
    assert art.report["dispatch"]["calls"] == {"anychip.matmul_bias": 1}
    report = anychip.verify(model, target="cpu", dispatch=True, dims=dims)
    assert report.passed, report.summary()
