"""Layer-by-layer comparison finds the first node out of tolerance."""

from __future__ import annotations

import anychip.compiler.compare as compare_mod
from anychip.compiler.compare import compare_layers


def test_all_nodes_within_tolerance(linear_model):
    rows, how = compare_layers(linear_model, target="cpu")
    assert how == "executed"
    assert [r.node for r in rows] == ["fc/matmul", "fc/add", "fc/relu"]
    assert all(r.passed for r in rows) and max(r.max_abs for r in rows) < 1e-4


def test_first_diverging_node_is_reported(linear_model, monkeypatch):
    real = compare_mod.run_onnxruntime

    def skewed(model, feed, label):
        outs = real(model, feed, label)
        names = [o.name for o in model.graph.output]
        return [o + 1.0 if n == "z" else o for n, o in zip(names, outs)]

    monkeypatch.setattr(compare_mod, "run_onnxruntime", skewed)
    rows, _ = compare_layers(linear_model, target="cpu")
    first_bad = next(r for r in rows if not r.passed)
    assert first_bad.node == "fc/add" and first_bad.op == "Add"
    assert abs(first_bad.max_abs - 1.0) < 1e-4


def _deep_dot():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(3).standard_normal((4096, 256)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="dot"),
         helper.make_node("Relu", ["m"], ["y"], name="relu")],
        "deep_dot", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_reduced_precision_nodes_are_judged_against_the_formats_error(monkeypatch):
    """fp16 on ascend-910b: the 4096-term dot product misses rtol/atol but is within fp16
    storage's own error; with an emulation that had no error, the same node is the first
    failure (the decision rests on the format's measured error)."""
    rows, how = compare_layers(_deep_dot(), target="ascend-910b")
    dot = next(r for r in rows if r.node == "dot")
    assert how == "simulated" and dot.rule == "format-error" and dot.passed
    assert dot.rmse <= 3 * dot.format_rmse and all(r.passed for r in rows)

    def exact(model, feed, precision, label):
        return compare_mod.run_onnxruntime(model, feed, label)

    monkeypatch.setattr(compare_mod, "emulated_outputs", exact)
    rows, _ = compare_layers(_deep_dot(), target="ascend-910b")
    first_bad = next(r for r in rows if not r.passed)
    assert first_bad.node == "dot" and first_bad.rule == "format-error"
    assert first_bad.format_rmse == 0.0
