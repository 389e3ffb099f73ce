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
