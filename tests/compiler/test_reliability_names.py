"""Name sanitising is injective: colliding spellings of one C identifier stay distinct values,
and users address inputs and outputs by their original names (issue 19, item 2)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import anychip
from anychip.compiler.names import all_names, sanitize_initializer_names, sanitize_io_names
from anychip.compiler.reference import run_onnxruntime
from anychip.compiler.tolerances import tolerance_for


def _colliding_model() -> onnx.ModelProto:
    """Inputs a/b, a_b, a:b, an intermediate named a_b_1 and outputs o/1, o:1: every naive
    sanitiser maps two of them onto one name."""
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Mul", ["a/b", "a_b"], ["a_b_1"], name="a/b"),
             helper.make_node("Sub", ["a_b_1", "a:b"], ["o/1"], name="a_b"),
             helper.make_node("Add", ["a:b", "a/b"], ["o:1"], name="a:b")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, f, [3]) for n in ("a/b", "a_b", "a:b")],
        [helper.make_tensor_value_info(n, f, [3]) for n in ("o/1", "o:1")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_io_mapping_is_injective_and_disjoint_from_other_names():
    model = _colliding_model()
    before = all_names(model)
    mapping = sanitize_io_names(model)
    safe = list(mapping.values())
    assert len(set(safe)) == len(safe) == 5
    assert mapping["a_b"] == "a_b"       # already an identifier: kept
    others = before - set(mapping)
    assert not (set(safe) - set(mapping)) & others   # no new name equals an existing one
    onnx.checker.check_model(model, full_check=True)


def test_initializer_mapping_is_injective():
    f = TensorProto.FLOAT
    inits = [helper.make_tensor(n, f, [1], [float(i + 1)]) for i, n in enumerate(["w.1", "w_1"])]
    nodes = [helper.make_node("Add", ["x", "w.1"], ["t"]),
             helper.make_node("Mul", ["t", "w_1"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [1])],
                              [helper.make_tensor_value_info("y", f, [1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    mapping = sanitize_initializer_names(model)
    assert len(set(mapping.values())) == 2
    values = {i.name: onnx.numpy_helper.to_array(i)[0] for i in model.graph.initializer}
    assert values[mapping["w.1"]] == 1.0 and values[mapping["w_1"]] == 2.0


@pytest.mark.parametrize("target", ["cpu"])
def test_colliding_names_compile_and_run_like_ort(target):
    model = _colliding_model()
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal(3).astype(np.float32) for n in ("a/b", "a_b", "a:b")}
    art = anychip.compile(model, target=target)
    got = art.run(feed)
    want = run_onnxruntime(model, feed, "ref")
    tol = tolerance_for(art.precision, "float32")
    for name, ref in zip(("o/1", "o:1"), want):
        np.testing.assert_allclose(got[name], ref, rtol=tol.rtol, atol=tol.atol)
