"""Small ONNX models for the GPU backend tests (onnx.helper, seeded weights, no downloads)."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_softmax_mlp(width: int = 256) -> onnx.ModelProto:
    """y = softmax(relu(x @ W1 + b) @ W2): a matmul kernel and row reductions (max, sum) that
    TVM schedules across a warp, so the warp size shows in the generated code."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, width)).astype(np.float32) / 8, "W1")
    b1 = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "B1")
    w2 = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / 16, "W2")
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"], name="fc1"),
             helper.make_node("Add", ["h0", "B1"], ["h1"], name="bias1"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
             helper.make_node("MatMul", ["h2", "W2"], ["h3"], name="fc2"),
             helper.make_node("Softmax", ["h3"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "softmax_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, width])],
                              [w1, b1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def make_float64_model(io_dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """y = float32(double(x) * 2.0 + 1.0): float64 inside the graph (and at its inputs and
    outputs when io_dtype is DOUBLE)."""
    two = numpy_helper.from_array(np.array([2.0]), "two")
    one = numpy_helper.from_array(np.array([1.0]), "one")
    nodes = [helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE, name="to_double"),
             helper.make_node("Mul", ["xd", "two"], ["m"], name="mul"),
             helper.make_node("Add", ["m", "one"], ["a"], name="add"),
             helper.make_node("Cast", ["a"], ["y"], to=io_dtype, name="back")]
    graph = helper.make_graph(nodes, "double_inside",
                              [helper.make_tensor_value_info("x", io_dtype, [8])],
                              [helper.make_tensor_value_info("y", io_dtype, [8])], [two, one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def squeezenet_path() -> str:
    """SqueezeNet 1.0 with random weights, shipped inside the onnx package (light models)."""
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        "light_squeezenet.onnx")
