"""ATC's Conv+BatchNorm / Scale fusion: folded in float64 before the precision pass, exactly
the same function in float32, reported per absorbed node, and refused where it would change
the result."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.backends.npu.fusion import fuse_channel_affine
from anychip.compiler.tolerances import compare, tolerance_for

C = 8


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _bn(name, x, y, rng, eps=1e-3):
    params = [_init(f"{name}_{p}", v) for p, v in (
        ("g", rng.uniform(0.5, 2.0, C)), ("b", rng.standard_normal(C)),
        ("m", rng.standard_normal(C)), ("v", rng.uniform(0.1, 3.0, C)))]
    return helper.make_node("BatchNormalization", [x] + [p.name for p in params], [y],
                            name=name, epsilon=eps), params


def conv_bn_scale_model(extra_use: bool = False, last_axis_mul: bool = False):
    """conv -> BN -> Mul(per-channel, through Unsqueeze) -> Add -> relu -> BN -> Mul -> Add.

    The first run follows a conv (folded into it), the second follows a relu (merged into
    one Mul and one Add). `extra_use` gives the first BN's output a second consumer (no
    fusion there); `last_axis_mul` scales along W instead of C (not per-channel)."""
    rng = np.random.default_rng(0)
    inits = [_init("W", rng.standard_normal((C, 3, 3, 3)) * 0.3), _init("B", rng.standard_normal(C)),
             _init("s1", rng.uniform(0.5, 1.5, C)), _init("t1", rng.standard_normal((C, 1, 1))),
             _init("s2", rng.uniform(0.5, 1.5, (C, 1, 1))), _init("t2", rng.standard_normal((1, C, 1, 1))),
             _init("sw", rng.uniform(0.5, 1.5, 6)), numpy_helper.from_array(np.array([1, 2], np.int64), "ax")]
    bn1, p1 = _bn("bn1", "c", "n1", rng)
    bn2, p2 = _bn("bn2", "r", "n2", rng)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             bn1,
             helper.make_node("Unsqueeze", ["s1", "ax"], ["s1u"], name="unsq"),
             helper.make_node("Mul", ["n1", "sw" if last_axis_mul else "s1u"], ["m1"], name="mul1"),
             helper.make_node("Add", ["t1", "m1"], ["a1"], name="add1"),
             helper.make_node("Relu", ["a1"], ["r"], name="relu"),
             bn2,
             helper.make_node("Mul", ["n2", "s2"], ["m2"], name="mul2"),
             helper.make_node("Sub", ["m2", "t2"], ["y"], name="sub2")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, 6, 6])]
    if extra_use:
        outputs.append(helper.make_tensor_value_info("n1", TensorProto.FLOAT, [1, C, 6, 6]))
    graph = helper.make_graph(nodes, "conv_bn_scale",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              outputs, inits + p1 + p2)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def test_chains_fold_into_the_conv_and_into_one_scale_and_shift():
    model = conv_bn_scale_model()
    fused_model, fused = fuse_channel_affine(model)
    ops = [n.op_type for n in fused_model.graph.node if n.op_type != "Unsqueeze"]
    assert ops == ["Conv", "Relu", "Mul", "Add"]
    assert {(f.name, f.into) for f in fused} == {
        ("bn1", "conv"), ("mul1", "conv"), ("add1", "conv"), ("mul2", "bn2"), ("sub2", "bn2")}
    assert model.graph.node[1].op_type == "BatchNormalization"   # the input is not modified
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    got, want = _ort(fused_model, x)[0], _ort(model, x)[0]
    result = compare(got, want, tolerance_for("fp32", np.float32))
    assert result.passed, result


@pytest.mark.parametrize("variant", ["extra_use", "last_axis_mul"])
def test_no_fusion_where_it_would_change_the_result(variant):
    model = conv_bn_scale_model(**{variant: True})
    fused_model, fused = fuse_channel_affine(model)
    into = {f.name: f.into for f in fused}
    if variant == "extra_use":      # n1 is also a graph output: the conv stops at bn1 (and
        assert into["bn1"] == "conv" and "mul1" not in into    # produces n1 itself)
        assert into["add1"] == "mul1"  # mul1 + add1 after it become one scale-and-shift
    else:                           # mul1 scales along W: the conv takes bn1 only
        assert into["bn1"] == "conv" and "mul1" not in into and "add1" not in into
    x = np.random.default_rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32)
    for got, want in zip(_ort(fused_model, x), _ort(model, x)):
        assert compare(got, want, tolerance_for("fp32", np.float32)).passed


def test_report_lists_absorbed_nodes_and_fp16_error_falls(tmp_path):
    """force_fp16 after the fusion is within the fp16 tolerance and every original node is in
    report.json, the absorbed ones with the node they went into."""
    model = conv_bn_scale_model()
    art = anychip.compile(model, target="ascend-910b")
    nodes = {n["name"]: n for n in art.report["placement"]["nodes"]}
    assert {n.name for n in model.graph.node} <= set(nodes)
    assert nodes["bn1"]["unit"] == "fused" and "'conv'" in nodes["bn1"]["reason"]
    assert art.report["placement"]["counts"]["fused"] == 5
    x = np.random.default_rng(3).standard_normal((1, 3, 6, 6)).astype(np.float32)
    got = art.run({"x": x})["y"]
    want = _ort(model, x)[0]
    assert compare(got, want, tolerance_for("fp16", np.float32)).passed
    assert not np.array_equal(got, want)        # it did compute in float16
    json.dumps(art.report)                      # still plain JSON


def test_conv_bias_is_added_to_the_fp32_accumulator_before_rounding():
    """After the fusion the conv carries the bias; under force_fp16 the cube keeps its float32
    accumulator for that add and rounds once (one float16 rounding fewer per conv)."""
    from anychip.backends.npu.chip import Chip
    from anychip.backends.npu.lowering import cube_bias_in_fp32, graph_passes, import_simulated
    from anychip.backends.npu.placement import place_nodes
    from anychip.backends.npu.precision import simulated_model
    from anychip.compiler.registry import get_profile

    model, _ = fuse_channel_affine(conv_bn_scale_model())
    places = place_nodes(model, Chip.of(get_profile("ascend-910b")), "force_fp16")
    mod = graph_passes(import_simulated(simulated_model(model, places), "m"))
    before, after = mod.script(), cube_bias_in_fp32(mod).script()
    assert 'out_dtype="float32"' not in before
    assert 'out_dtype="float32"' in after and after.count("R.nn.conv2d") == 1


@pytest.mark.parametrize("variant", ["plain", "extra_use", "last_axis_mul"])
def test_the_fusion_is_the_same_with_the_weights_set_aside(monkeypatch, variant):
    """fuse_channel_affine infers shapes on a twin of the model without its large weights
    (compiler/onnx_inference.py) and reads the constants from the model itself: with every
    float constant set aside, it fuses the same nodes into the same bytes as with onnx's
    inference of the whole model."""
    from anychip.compiler import onnx_inference

    model = conv_bn_scale_model(**({} if variant == "plain" else {variant: True}))
    monkeypatch.setattr(onnx_inference, "LARGE_BYTES", 1 << 40)
    assert onnx_inference.light_twin(model) is None
    whole, fused_whole = fuse_channel_affine(model)
    monkeypatch.setattr(onnx_inference, "LARGE_BYTES", 1)
    assert onnx_inference.light_twin(model) is not None
    light, fused_light = fuse_channel_affine(model)
    assert fused_whole and fused_light == fused_whole
    assert light.SerializeToString() == whole.SerializeToString()
