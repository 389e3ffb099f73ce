"""NHWC layout conversion on the cpu backend: a per-channel constant shaped (C, 1, 1) (an ONNX
Mul/Add after a concatenation, as DenseNet's pre-activation batch norms are written) must not
send its elementwise op back to NCHW between two transposes, and the chain of per-channel ops
(the batch norm, then the Mul/Add) is one multiply and one add; the outputs match ONNX
Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip


def _dense_block() -> onnx.ModelProto:
    """A stem conv, then twice: conv -> concat(features, conv) -> BatchNormalization -> Mul/Add
    by (C, 1, 1) constants -> Relu (DenseNet's pre-activation); a 1x1 conv at the end."""
    rng = np.random.default_rng(3)
    c, growth = 8, 4
    stem = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(c * 9)).astype(np.float32)
    inits = [numpy_helper.from_array(stem, "stem_w")]
    nodes = [helper.make_node("Conv", ["x", "stem_w"], ["stem"], pads=[1, 1, 1, 1])]
    prev, width = "stem", c
    for i in range(2):
        w = (rng.standard_normal((growth, width, 3, 3)) / np.sqrt(width * 9)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Concat", [prev, f"c{i}"], [f"cat{i}"], axis=1))
        width += growth
        inits += [numpy_helper.from_array(rng.uniform(0.5, 1.5, (width, 1, 1)).astype(np.float32),
                                          f"s{i}"),
                  numpy_helper.from_array((rng.standard_normal((width, 1, 1)) * 0.1)
                                          .astype(np.float32), f"b{i}")]
        bn = [rng.uniform(0.5, 1.5, width), rng.standard_normal(width) * 0.1,
              rng.standard_normal(width) * 0.1, rng.uniform(0.5, 1.5, width)]
        inits += [numpy_helper.from_array(v.astype(np.float32), f"bn{i}_{k}")
                  for k, v in zip("sbmv", bn)]
        nodes.append(helper.make_node("BatchNormalization",
                                      [f"cat{i}", *(f"bn{i}_{k}" for k in "sbmv")],
                                      [f"n{i}"]))
        nodes += [helper.make_node("Mul", [f"n{i}", f"s{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        prev = f"r{i}"
    w = (rng.standard_normal((c, width, 1, 1)) / np.sqrt(width)).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "wo"))
    nodes.append(helper.make_node("Conv", [prev, "wo"], ["y"]))
    graph = helper.make_graph(
        nodes, "dense_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _lowered_ops(model) -> list[str]:
    import tvm
    from tvm import relax

    from anychip.compiler.backend import CompileOptions
    from anychip.compiler.driver import import_for, new_context
    from anychip.compiler.frontend import load_model
    from anychip.compiler.registry import get_backend, get_profile

    source = load_model(model, None, {}, None)
    profile = get_profile("cpu")
    backend, options = get_backend(profile), CompileOptions()
    ctx = new_context(backend, profile, options, source)
    mod = backend.lower(import_for(backend, source, profile, ctx), profile, options, ctx)
    ops: list[str] = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            ops.append(str(expr.op.name))

    relax.analysis.post_order_visit(mod["main"], visit)
    return ops


def test_channel_constants_of_rank_three_stay_in_nhwc():
    model = _dense_block()
    ops = _lowered_ops(model)
    # the model's input and output only: no transpose pair around the Mul/Add
    assert ops.count("relax.permute_dims") == 2, ops
    # each batch norm + Mul + Add (subtract, divide, multiply, add, multiply, add) is one
    # multiply and one add (fold_affine_chains)
    assert "relax.divide" not in ops and "relax.subtract" not in ops, ops
    assert ops.count("relax.multiply") == 2 and ops.count("relax.add") == 2, ops
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()
    assert report.max_abs < 1e-5


def _shuffle_block(groups: int = 4, channels: int = 16) -> onnx.ModelProto:
    """grouped 1x1 conv -> ShuffleNet's channel shuffle (Reshape [N, g, C/g, H, W], Transpose,
    Reshape back) -> depthwise 3x3 conv."""
    rng = np.random.default_rng(5)
    c, g = channels, groups
    inits = [numpy_helper.from_array((rng.standard_normal((c, c // g, 1, 1)) / 2)
                                     .astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((c, 1, 3, 3)) / 3)
                                     .astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([1, g, c // g, 6, 6], np.int64), "split"),
             numpy_helper.from_array(np.array([1, c, 6, 6], np.int64), "back")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], group=g),
             helper.make_node("Reshape", ["a", "split"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "back"], ["s"]),
             helper.make_node("Conv", ["s", "w2"], ["y"], group=c, pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_channel_shuffle_runs_on_the_nhwc_data():
    """No transpose pair around the shuffle: the model's input and output transposes and the
    shuffle's own swap of its last two axes; the channel order matches ONNX Runtime."""
    model = _shuffle_block()
    ops = _lowered_ops(model)
    assert ops.count("relax.permute_dims") == 3, ops
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()
    assert report.max_abs < 1e-5


# ops imported as `where` (no layout rule in TVM 0.27) or with a constant first operand
# (the binary rule follows the first operand): backends/host/relax_passes.sink_permutes
_WHERE_AND_CONSTANT_FIRST = {
    "Elu": lambda: ([helper.make_node("Elu", ["a"], ["m"], alpha=0.7)], []),
    "Selu": lambda: ([helper.make_node("Selu", ["a"], ["m"])], []),
    "Celu": lambda: ([helper.make_node("Celu", ["a"], ["m"], alpha=1.5)], []),
    "Where": lambda: ([helper.make_node("Greater", ["a", "t"], ["g"]),
                       helper.make_node("Where", ["g", "a", "t"], ["m"])],
                      [numpy_helper.from_array(np.array(0.25, np.float32), "t")]),
    "Reciprocal": lambda: ([helper.make_node("Abs", ["a"], ["b"]),
                            helper.make_node("Add", ["b", "one"], ["c"]),
                            helper.make_node("Reciprocal", ["c"], ["m"])],
                           [numpy_helper.from_array(np.array(1.0, np.float32), "one")]),
    "ChannelMinusX": lambda: ([helper.make_node("Sub", ["c8", "a"], ["m"])],
                              [numpy_helper.from_array(np.linspace(-1, 1, 8).astype(np.float32)
                                                       .reshape(8, 1, 1), "c8")]),
}


@pytest.mark.parametrize("act", ["LeakyRelu", "Clip", "Resize", "Mish", "GroupNorm",
                                 *_WHERE_AND_CONSTANT_FIRST])
def test_activations_and_upsampling_between_convolutions_stay_in_nhwc(act):
    """conv -> LeakyRelu (no layout rule in TVM 0.27: given the unary ops' one), Clip (TVM's
    converter made TE kernels: now clip), a x2 nearest Resize (a gather: now a repeat) or
    Mish (imported as x * tanh(log(1 + exp(x))): the constant 1 first, whose add stayed
    NCHW) or torch's GroupNorm (reshapes around an instance norm: now channel means and a
    group-averaging 1x1 convolution), an op imported as `where` (ELU, SELU, CELU) or with a
    constant first operand (1 / x, c - x) -> conv: only the model's input and output
    transposes; outputs as ONNX Runtime's."""
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) / 3).astype(np.float32),
                                     "w1"),
             numpy_helper.from_array((rng.standard_normal((8, 8, 1, 1)) / 3).astype(np.float32),
                                     "w2")]
    size = 12 if act == "Resize" else 6
    if act == "LeakyRelu":
        mid = [helper.make_node("LeakyRelu", ["a"], ["m"], alpha=0.1)]
    elif act == "Clip":
        inits += [numpy_helper.from_array(np.array(v, np.float32), n)
                  for n, v in (("lo", 0.0), ("hi", 6.0))]
        mid = [helper.make_node("Clip", ["a", "lo", "hi"], ["m"])]
    elif act == "Mish":
        mid = [helper.make_node("Mish", ["a"], ["m"])]
    elif act == "GroupNorm":   # as torch exports nn.GroupNorm(4, 8)
        inits += [numpy_helper.from_array(np.array(v, dtype), n) for n, v, dtype in (
            ("to_groups", [0, 4, -1], np.int64), ("back", [1, 8, 6, 6], np.int64),
            ("ones", [1.0] * 4, np.float32), ("zeros", [0.0] * 4, np.float32))]
        mid = [helper.make_node("Reshape", ["a", "to_groups"], ["g"]),
               helper.make_node("InstanceNormalization", ["g", "ones", "zeros"], ["gn"]),
               helper.make_node("Reshape", ["gn", "back"], ["m"])]
    elif act in _WHERE_AND_CONSTANT_FIRST:
        mid, extra = _WHERE_AND_CONSTANT_FIRST[act]()
        inits += extra
    else:
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
        mid = [helper.make_node("Resize", ["a", "", "scales"], ["m"], mode="nearest")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), *mid,
             helper.make_node("Conv", ["m", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, size, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    ops = _lowered_ops(model)
    assert ops.count("relax.permute_dims") == 2, ops
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()
