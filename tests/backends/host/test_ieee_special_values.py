"""IEEE special values (NaN, +-Inf, +-0, subnormals, the float32 extremes) go through every
elementwise, activation and reduction operator the zoo uses as ONNX Runtime computes them, on
cpu and the npu simulator (issue 19, item 3). Before the fix relu(x + W), Max, Min, Clip,
HardSigmoid, Sign, ReduceMax and ReduceMin turned NaN into a number."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.compiler.reference import run_onnxruntime

SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 1.0, -2.5, 3.4e38,
                     -3.4e38, 0.5], np.float32)
UNARY = ["Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Softmax",
         "LogSoftmax", "Clip", "Abs", "Neg", "Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Floor",
         "Ceil", "Round", "Sign", "Softplus", "Elu", "Selu", "Sin", "Cos"]
BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"]
# pools on x reshaped to [1, 3, 2, 2] (each window then holds NaN, +-Inf, +-0, subnormals...)
POOL = {"MaxPool": {"kernel_shape": [2, 2]},
        "MaxPool_1x2": {"kernel_shape": [1, 2], "strides": [1, 1]},
        "AveragePool": {"kernel_shape": [1, 2]},
        "GlobalAveragePool": {}, "GlobalMaxPool": {}}
# ONNX Runtime's max pools are not IEEE: MLAS folds acc = max_ps(acc, v), which returns v
# when either is NaN, so a window's NaN survives only as its last element ([nan, 1, 2, 3] -> 3,
# [1, 2, 3, nan] -> nan). anychip keeps NaN wherever the window holds one, as numpy, torch and
# ORT's own ReduceMax do (docs/security.md); windows without NaN must equal ORT's.
NAN_MAX_POOLS = {"MaxPool": lambda x4: x4.max(axis=(2, 3), keepdims=True),
                 "MaxPool_1x2": lambda x4: np.maximum(x4[..., :-1], x4[..., 1:]),
                 "GlobalMaxPool": lambda x4: x4.max(axis=(2, 3), keepdims=True)}
REDUCE = ["ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean", "ReduceL2", "ReduceProd",
          "ReduceLogSumExp"]
# the npu simulator is compared in the model's own dtypes: float16 storage would change the
# finite values (3.4e38 overflows), not the IEEE semantics under test
TARGETS = {"cpu": {}, "ascend-910b": {"precision_mode": "must_keep_origin_dtype"}}


def _model() -> tuple[onnx.ModelProto, list[str]]:
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(np.full(12, 0.25, np.float32), "W")
    inits = [w, helper.make_tensor("lo", f, [], [-1.0]), helper.make_tensor("hi", f, [], [1.0]),
             numpy_helper.from_array(np.array([1, 3, 2, 2], np.int64), "nchw"),
             numpy_helper.from_array(np.full((12, 4), 0.25, np.float32), "W2"),
             numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "K"),
             numpy_helper.from_array(np.full(3, 0.5, np.float32), "c3"),
             numpy_helper.from_array(np.full(3, 2.0, np.float32), "v3")]
    nodes = [helper.make_node("Add", ["x", "W"], ["xw"]),
             helper.make_node("Relu", ["xw"], ["relu_x_plus_w"]),
             helper.make_node("Reshape", ["x", "nchw"], ["x4"])]
    outs = ["relu_x_plus_w"]
    for op in UNARY:
        inputs = ["x", "lo", "hi"] if op == "Clip" else ["x"]
        kwargs = {"axis": -1} if op in ("Softmax", "LogSoftmax") else {}
        nodes.append(helper.make_node(op, inputs, [op], **kwargs))
        outs.append(op)
    for op in BINARY:
        nodes.append(helper.make_node(op, ["x", "W"], [op]))
        outs.append(op)
    # the zoo's other layers: matmul and convolution (library calls on cpu), layer norm,
    # inference batch norm, where
    nodes += [helper.make_node("MatMul", ["x", "W2"], ["MatMul"]),
              helper.make_node("Conv", ["x4", "K"], ["Conv"]),
              helper.make_node("LayerNormalization", ["x", "W", "W"], ["LayerNormalization"],
                               axis=-1),
              helper.make_node("BatchNormalization", ["x4", "c3", "c3", "c3", "v3"],
                               ["BatchNormalization"]),
              helper.make_node("Greater", ["x", "lo"], ["x_gt_lo"]),
              helper.make_node("Where", ["x_gt_lo", "x", "W"], ["Where"])]
    outs += ["MatMul", "Conv", "LayerNormalization", "BatchNormalization", "Where"]
    for name, attrs in POOL.items():
        nodes.append(helper.make_node(name.split("_")[0], ["x4"], [name], **attrs))
        outs.append(name)
    for op in REDUCE:
        nodes.append(helper.make_node(op, ["x"], [op], keepdims=1))
        outs.append(op)
    graph = helper.make_graph(nodes, "specials", [helper.make_tensor_value_info("x", f, [12])],
                              [helper.make_tensor_value_info(o, f, None) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model), outs


# the mean of [-2.5, 3.4e38, -3.4e38, 0.5] is 0.125 summed in order and 0 summed in pairs (ORT):
# summation order, not IEEE semantics; finite averages are compared to float32's rounding of
# the window's largest magnitude
ATOL = {"GlobalAveragePool": 3.4e38 * 2.0 ** -23}


def _same(got: np.ndarray, want: np.ndarray, atol: float = 1e-6) -> bool:
    if got.shape != want.shape or not np.array_equal(np.isnan(got), np.isnan(want)):
        return False
    if not np.array_equal(np.isposinf(got), np.isposinf(want)) or \
            not np.array_equal(np.isneginf(got), np.isneginf(want)):
        return False
    finite = np.isfinite(want)
    return np.allclose(got[finite], want[finite], rtol=1e-4, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize("target", list(TARGETS))
def test_special_values_propagate_as_onnx_runtime(target):
    model, outs = _model()
    art = anychip.compile(model, target=target, **TARGETS[target])
    got = art.run({"x": SPECIALS})
    want = dict(zip(outs, run_onnxruntime(model, {"x": SPECIALS}, "reference")))
    x4 = SPECIALS.reshape(1, 3, 2, 2)
    for name, pool in NAN_MAX_POOLS.items():
        nan = np.isnan(pool(x4))
        assert not np.isnan(want[name][nan]).all()   # ORT drops some: the case is exercised
        want[name] = np.where(nan, np.float32(np.nan), want[name])
    wrong = {o: (got[o].tolist(), want[o].tolist()) for o in outs if not _same(got[o], want[o], ATOL.get(o, 1e-6))}
    assert not wrong, wrong
    assert np.isnan(got["relu_x_plus_w"][0]) and np.isnan(got["ReduceMax"]).all()
    assert np.isnan(got["MaxPool"].reshape(-1)[0]) and np.isnan(got["GlobalMaxPool"]).any()


@pytest.mark.parametrize("pool", [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                                  dict(kernel_shape=[2, 3], strides=[1, 2], pads=[0, 1, 1, 0],
                                       dilations=[2, 1])])
def test_max_pools_keep_nan_in_one_kernel(pool, monkeypatch):
    """Max pools of NHWC data in TVM's kernels (dispatch off) are one kernel whose max keeps a
    NaN (ieee.nan_max_pool2d; no average-pooled mask): each window holding a NaN gives NaN,
    a window of -inf gives -inf, finite ones equal ONNX Runtime's exactly."""
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    f = TensorProto.FLOAT
    one = numpy_helper.from_array(np.ones((8, 1, 1, 1), np.float32), "I")
    nodes = [helper.make_node("Conv", ["x", "I"], ["c"], group=8),   # identity: NHWC from here
             helper.make_node("MaxPool", ["c"], ["y"], **pool)]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", f, [1, 8, 9, 11])],
                              [helper.make_tensor_value_info("y", f, None)], [one])
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.random.default_rng(0).standard_normal((1, 8, 9, 11)).astype(np.float32)
    x[0, 1, 4, 5] = x[0, 3, 0, 0] = x[0, 5, 8, 10] = np.nan
    x[0, 6] = -np.inf
    art = anychip.compile(model, target="cpu", dispatch=False)
    import tvm
    from tvm import relax

    calls = [line.split()[1] for line in relax.VMExecutable(tvm.runtime.load_module(
        str(art.library_path))).as_text().splitlines() if line.strip().startswith("call ")]
    assert any("keep_nan" in k for k in calls) and not any("avg_pool" in k for k in calls), \
        calls   # the one kernel, not TOPI's pooling and the NaN mask's average pool
    got = art.run({"x": x})["y"]
    # the ONNX reference implementation: on the input with NaN as 0, then NaN where the
    # pooled NaN mask is 1. Its padding never wins (a window of -inf and pads is -inf, as in
    # torch); ONNX Runtime's MLAS pads with the lowest float (-3.4e38 there)
    from onnx.reference import ReferenceEvaluator

    spec = ReferenceEvaluator(model)
    want = spec.run(None, {"x": np.nan_to_num(x, nan=0.0, neginf=-np.inf)})[0]
    nan_windows = spec.run(None, {"x": np.isnan(x).astype(np.float32)})[0]
    want = np.where(nan_windows > 0, np.float32(np.nan), want)
    assert np.isneginf(got[0, 6]).all()
    assert _same(got, want), (got, want)
    ort = run_onnxruntime(model, {"x": np.nan_to_num(x, nan=0.0)}, "reference")[0]
    plain = np.isfinite(want)
    np.testing.assert_allclose(got[plain], ort[plain], rtol=0, atol=0)
