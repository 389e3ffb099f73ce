"""A batch-1 model run at another batch when its graph bakes the batch into a Reshape
(compiler/rebatch.py): the rewritten model computes every row as the original computes it
alone, and a graph that mixes rows is refused with one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.compiler.errors import AnychipError
from anychip.compiler.frontend import load_model
from anychip.compiler.reference import run_onnxruntime
from anychip.compiler.tolerances import FLOAT_TOLERANCES, compare


def _pool_flatten_gemm() -> onnx.ModelProto:
    """Conv -> GlobalAveragePool -> Reshape(x, [1, 4]) -> Gemm: the ONNX model zoo's ResNet
    head, batch 1 written into the Reshape target."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 4], np.int64), "target"),
             numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "g")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Reshape", ["p", "target"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _row_mixing() -> onnx.ModelProto:
    """Reshape [1, 4] -> [1, 2, 2] then Transpose(1, 0, 2): at batch N the rows interleave."""
    inits = [numpy_helper.from_array(np.array([1, 2, 2], np.int64), "target")]
    nodes = [helper.make_node("Reshape", ["x", "target"], ["r"], name="split"),
             helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0, 2])]
    graph = helper.make_graph(
        nodes, "mix", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_baked_batch_follows_the_override_and_each_row_matches_the_original():
    model = _pool_flatten_gemm()
    source = load_model(model, None, {"x": (5, 3, 8, 8)})
    target = next(t for t in source.original.graph.initializer
                  if t.name == next(n for n in source.original.graph.node
                                    if n.op_type == "Reshape").input[1])
    assert numpy_helper.to_array(target).tolist() == [0, 4]   # the batch entry now follows x

    compiled = anychip.compile(model, target="cpu", shapes={"x": (5, 3, 8, 8)})
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    out = compiled.run({"x": x})
    out = out[0] if isinstance(out, (list, tuple)) else out["y"]
    assert out.shape == (5, 2)
    for row in range(5):   # each row as the untouched batch-1 model computes it alone
        alone = run_onnxruntime(model, {"x": x[row:row + 1]}, "head")[0]
        assert compare(out[row:row + 1], alone, FLOAT_TOLERANCES["fp32"]).passed


def test_a_graph_that_mixes_rows_is_refused_naming_the_rewritten_reshape():
    with pytest.raises(AnychipError, match=r"fixes its batch.*first: split.*export the model"):
        load_model(_row_mixing(), None, {"x": (3, 4)})


def test_an_override_of_other_dims_leaves_reshape_targets_alone():
    model = _pool_flatten_gemm()
    source = load_model(model, None, {"x": (1, 3, 16, 16)})
    reshape = next(n for n in source.original.graph.node if n.op_type == "Reshape")
    assert reshape.input[1] == "target"
