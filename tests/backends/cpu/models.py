"""Small ONNX models for the cpu backend tests: the patterns the dispatch stage offloads.

Built with onnx.helper and seeded weights, static shapes, small enough that TVM's own
(unscheduled) kernels finish quickly: each test compares the library path with them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def conv_net(channels: int = 8) -> onnx.ModelProto:
    """Conv+BN+Relu, a residual block (Conv+BN, Sum with the skip, Relu), MaxPool, a grouped
    strided conv, a dilated conv with asymmetric padding (not offloadable), GlobalAveragePool,
    Gemm."""
    rng = np.random.default_rng(1)
    c = channels

    def conv_w(name, cout, cin, k):
        return numpy_helper.from_array(
            (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32), name)

    def bn(prefix, n):
        return [numpy_helper.from_array(rng.uniform(0.5, 1.5, n).astype(np.float32), f"{prefix}_s"),
                numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), f"{prefix}_b"),
                numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), f"{prefix}_m"),
                numpy_helper.from_array(rng.uniform(0.5, 1.5, n).astype(np.float32), f"{prefix}_v")]

    def bn_node(prefix, x, y):
        return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b",
                                                       f"{prefix}_m", f"{prefix}_v"], [y])

    inits = [conv_w("w1", c, 3, 3), *bn("bn1", c), conv_w("w2", c, c, 3), *bn("bn2", c),
             conv_w("w3", 2 * c, c // 2, 3),
             numpy_helper.from_array((rng.standard_normal(2 * c) * 0.1).astype(np.float32), "b3"),
             conv_w("w4", 2 * c, 2 * c, 3),
             numpy_helper.from_array(rng.standard_normal((2 * c, 5)).astype(np.float32) * 0.3, "fc_w"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32) * 0.1, "fc_b")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        bn_node("bn1", "c1", "n1"), helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        bn_node("bn2", "c2", "n2"),
        helper.make_node("Sum", ["n2", "r1"], ["s2"]), helper.make_node("Relu", ["s2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["m2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["m2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2],
                         group=2),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Conv", ["r3", "w4"], ["c4"], pads=[2, 2, 1, 1], dilations=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c4"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)


def attention_block(seq: int = 16, hidden: int = 32, heads: int = 2) -> onnx.ModelProto:
    """One transformer block: dense QKV projections (MatMul+Add), batched activation x
    activation matmuls, softmax, output projection with a residual add, LayerNorm, and a
    GELU feed-forward (MatMul+Add+Gelu, MatMul+Add+residual)."""
    rng = np.random.default_rng(2)
    d, h, dh = hidden, heads, hidden // heads

    def dense(name, k, n):
        return [numpy_helper.from_array((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32), f"{name}_w"),
                numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), f"{name}_b")]

    def dense_nodes(name, x, y):
        return [helper.make_node("MatMul", [x, f"{name}_w"], [f"{name}_mm"]),
                helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [y])]

    inits = [*dense("q", d, d), *dense("k", d, d), *dense("v", d, d), *dense("o", d, d),
             *dense("f1", d, 4 * d), *dense("f2", 4 * d, d),
             numpy_helper.from_array(np.array([1, seq, h, dh], np.int64), "split_shape"),
             numpy_helper.from_array(np.array([1, seq, d], np.int64), "merge_shape"),
             numpy_helper.from_array(np.array(1 / np.sqrt(dh), np.float32), "scale"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, d).astype(np.float32), "ln_g"),
             numpy_helper.from_array((rng.standard_normal(d) * 0.1).astype(np.float32), "ln_b")]
    nodes = [*dense_nodes("q", "x", "q"), *dense_nodes("k", "x", "k"), *dense_nodes("v", "x", "v")]
    for t in "qkv":
        nodes += [helper.make_node("Reshape", [t, "split_shape"], [f"{t}4"]),
                  helper.make_node("Transpose", [f"{t}4"], [f"{t}h"], perm=[0, 2, 1, 3])]
    nodes += [
        helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["qh", "kt"], ["logits"]),
        helper.make_node("Mul", ["logits", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "vh"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merge_shape"], ["ctx_m"]),
        *dense_nodes("o", "ctx_m", "o"),
        helper.make_node("Add", ["o", "x"], ["res1"]),
        helper.make_node("LayerNormalization", ["res1", "ln_g", "ln_b"], ["ln1"], axis=-1),
        *dense_nodes("f1", "ln1", "f1"),
        helper.make_node("Gelu", ["f1"], ["g"]),
        *dense_nodes("f2", "g", "f2"),
        helper.make_node("Add", ["f2", "ln1"], ["y"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, d])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, d])], inits,
                  opset=20)


def residual_relu_dense(rows: int = 12, width: int = 24) -> onnx.ModelProto:
    """y = relu(x @ W + b + x): a dense layer whose constant weight the library packs, with the
    residual and relu that cannot be fused into oneDNN's linear and run after it."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["xwb"]),
             helper.make_node("Add", ["xwb", "x"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, width])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, width])], [w, b])


def transposed_matmuls(rows: int = 6, k: int = 128, n: int = 160) -> onnx.ModelProto:
    """Matmuls of transposed runtime tensors (no constant to fold the transpose into): x @ W^T
    (a weight in [out, in] layout), (g^T @ x)^T (a weight gradient's shape), and attention's
    q @ k^T with batch and head axes. W and k are large enough (>= 16k elements) for the cpu
    library to read them as views; g^T is small, so the library copies it."""
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y"]),
             helper.make_node("Transpose", ["g"], ["gt"], perm=[1, 0]),
             helper.make_node("MatMul", ["gt", "x"], ["gtx"]),
             helper.make_node("Transpose", ["gtx"], ["dw"], perm=[1, 0]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"])]
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("x", f, [rows, k]),
              helper.make_tensor_value_info("w", f, [n, k]),
              helper.make_tensor_value_info("g", f, [rows, n]),
              helper.make_tensor_value_info("q", f, [2, 4, 5, 64]),
              helper.make_tensor_value_info("k", f, [2, 4, 64, 64])]
    outputs = [helper.make_tensor_value_info("y", f, [rows, n]),
               helper.make_tensor_value_info("dw", f, [k, n]),
               helper.make_tensor_value_info("s", f, [2, 4, 5, 64])]
    return _model(nodes, inputs, outputs, [])
