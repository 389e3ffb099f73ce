"""Fixtures of the npu backend tests: the Ascend profiles and small ONNX models built in code."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from anychip.compiler.registry import profiles


def npu_targets() -> list[str]:
    """Every profile of the npu family: a new Ascend-style YAML is tested by these tests."""
    return sorted(name for name, p in profiles().items() if p.family == "npu")


def pytest_generate_tests(metafunc) -> None:
    if "npu_target" in metafunc.fixturenames:
        names = npu_targets()
        metafunc.parametrize("npu_target", names, ids=names)


def _const(name: str, array: np.ndarray):
    return numpy_helper.from_array(array, name)


def matmul_softmax_model(m: int = 32, k: int = 64, n: int = 48) -> onnx.ModelProto:
    """y = softmax(relu(x @ W) * 0.25): one cube op, one grey op, one black op."""
    rng = np.random.default_rng(0)
    w = _const("W", rng.standard_normal((k, n)).astype(np.float32))
    scale = _const("scale", np.array(0.25, np.float32))
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"),
             helper.make_node("Relu", ["mm"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "scale"], ["s"], name="scale_mul"),
             helper.make_node("Softmax", ["s"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "matmul_softmax",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                              [w, scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def mixed_model() -> onnx.ModelProto:
    """A model with every kind of placement: an int64 Gather (host), a Trilu (not in the AI
    Core op table: host), float64 arithmetic (host), a MatMul (cube), a Relu (vector) and a
    Shape/Reshape chain on static shapes (folded)."""
    rng = np.random.default_rng(1)
    emb = _const("emb", rng.standard_normal((10, 16)).astype(np.float32))
    w = _const("W", rng.standard_normal((16, 32)).astype(np.float32))
    two = _const("two", np.array(2.0, np.float64))
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["g"], name="embed"),
        helper.make_node("Add", ["g", "x"], ["a"], name="add"),
        helper.make_node("Trilu", ["a"], ["t"], name="trilu", upper=0),
        helper.make_node("Cast", ["t"], ["t64"], name="to_f64", to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["t64", "two"], ["m64"], name="mul_f64"),
        helper.make_node("Cast", ["m64"], ["m"], name="to_f32", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["m", "W"], ["mm"], name="matmul"),
        helper.make_node("Relu", ["mm"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["shape"], name="shape"),
        helper.make_node("Reshape", ["r", "shape"], ["y"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [8]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 32])], [emb, w, two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv_model(groups: int = 1) -> onnx.ModelProto:
    """A strided, padded 3x3 convolution with bias, then ReLU and global average pooling."""
    rng = np.random.default_rng(2)
    w = _const("W", (rng.standard_normal((8, 8 // groups, 3, 3)) * 0.2).astype(np.float32))
    b = _const("B", rng.standard_normal(8).astype(np.float32))
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", group=groups,
                              strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    graph = helper.make_graph(nodes, "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 8, 17, 17])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             [1, 8, 1, 1])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def ids_feed():
    rng = np.random.default_rng(3)
    return {"ids": rng.integers(0, 10, 8).astype(np.int64),
            "x": rng.standard_normal((8, 16)).astype(np.float32)}
