"""Shape inference without the weights (compiler/onnx_inference.py): the same bytes as onnx's
own inference on models whose large initializers it sets aside, the same errors, the model
left as it was when inference fails, and a twin that carries none of the weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from anychip.compiler import onnx_inference
from anychip.compiler.onnx_inference import (LARGE_BYTES, inferred_copy, inferred_view,
                                             infer_shapes, light_twin)

OPTIONS = [{}, {"strict_mode": True}, {"check_type": True, "strict_mode": True},
           {"check_type": True, "strict_mode": True, "data_prop": True}, {"data_prop": True}]


def _f32(name, shape, seed=0):
    return numpy_helper.from_array(
        np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def big_model(ir_version: int = 8, weights_in_inputs: bool = False) -> onnx.ModelProto:
    """Conv (147 KB weight) -> Relu -> Shape/Gather/Concat-computed Reshape (data propagation)
    -> Gemm (512 KB weight, small bias) -> If whose branches read an outer tensor; a float16
    initializer and int64 shape constants too, so that both kinds of initializer occur."""
    w = _f32("W", (64, 64, 3, 3))
    fc = _f32("FC", (512, 64 * 2 * 2), 1)
    fcb = _f32("FCB", (512,), 2)
    half = numpy_helper.from_array(np.ones((64, 1, 1), np.float16) * 0.5, "H16")   # 128 B
    big16 = numpy_helper.from_array(np.ones((512, 64), np.float16), "B16")         # 64 KiB
    minus1 = numpy_helper.from_array(np.array([-1], np.int64), "minus1")
    zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
    flag = numpy_helper.from_array(np.array(True), "flag")
    inits = [w, fc, fcb, half, big16, minus1, zero, flag]
    then_g = helper.make_graph([helper.make_node("Relu", ["y"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["y"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero_axes"))
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0, name="gather"),
        helper.make_node("Unsqueeze", ["n", "zero_axes"], ["n1"], name="unsq"),
        helper.make_node("Concat", ["n1", "minus1"], ["shp"], axis=0, name="concat"),
        helper.make_node("Reshape", ["r", "shp"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "FC", "FCB"], ["y"], transB=1, name="fc"),
        helper.make_node("If", ["flag"], ["z"], then_branch=then_g, else_branch=else_g,
                         name="if"),
        helper.make_node("Cast", ["B16"], ["B16_f32"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("MatMul", ["z", "B16_f32"], ["m"], name="matmul"),
        helper.make_node("Cast", ["H16"], ["H16_f32"], to=TensorProto.FLOAT, name="cast16"),
        helper.make_node("Mul", ["c", "H16_f32"], ["scaled"], name="mul"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 2, 2])]
    if weights_in_inputs:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in inits]
    outputs = [helper.make_tensor_value_info("m", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("scaled", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir_version
    return model


def _onnx_result(model: onnx.ModelProto, options: dict) -> bytes | str:
    try:
        return onnx.shape_inference.infer_shapes(model, **options).SerializeToString()
    except Exception as exc:   # noqa: BLE001 - compared with ours below
        return f"{type(exc).__name__}: {exc}"


def _ours(model: onnx.ModelProto, options: dict) -> bytes | str:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        return infer_shapes(copy, **options).SerializeToString()
    except Exception as exc:   # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize("ir_version,in_inputs", [(8, False), (8, True), (3, True)])
def test_same_bytes_as_onnx_inference(options, ir_version, in_inputs):
    model = big_model(ir_version, in_inputs)
    twin = light_twin(model)
    assert twin is not None, "the model must have weights to set aside for this test to test"
    assert {t.name for t in model.graph.initializer} - {t.name for t in twin.graph.initializer} \
        == {"W", "FC", "B16"}
    expected = _onnx_result(model, options)
    assert isinstance(expected, bytes), expected
    assert _ours(model, options) == expected
    assert inferred_copy(model, **options).SerializeToString() == expected
    # twice: inference of an already inferred model, as the npu backend's stages do
    again = onnx.load_from_string(expected)
    assert _ours(again, options) == _onnx_result(again, options)


def test_the_twin_holds_none_of_the_weights():
    model = big_model()
    twin = light_twin(model)
    assert model.ByteSize() > 700_000
    assert twin.ByteSize() < 4096          # graph, small constants and the types
    assert len(model.graph.input) == 1 and len(twin.graph.input) == 4


def test_the_view_leaves_the_model_alone_and_has_its_types():
    model = big_model()
    before = model.SerializeToString()
    view = inferred_view(model)
    assert model.SerializeToString() == before
    reference = onnx.shape_inference.infer_shapes(model)
    assert list(view.graph.value_info) == list(reference.graph.value_info)
    assert list(view.graph.output) == list(reference.graph.output)


def test_errors_are_onnx_errors_and_the_model_is_left_as_it_was():
    model = big_model()
    model.graph.node[0].input[1] = "FC"        # Conv with a 2-D weight: strict mode refuses
    before = model.SerializeToString()
    expected = _onnx_result(model, {"strict_mode": True})
    assert isinstance(expected, str) and "ShapeInferenceError" in expected
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    assert _ours(copy, {"strict_mode": True}) == expected
    with pytest.raises(Exception):
        infer_shapes(copy, strict_mode=True)
    assert copy.SerializeToString() == before


def test_an_initializer_that_disagrees_with_its_input_goes_through_onnx():
    """onnx compares an initializer with the graph input of its name; a weight set aside
    would skip that comparison, so such a model is inferred whole (and fails as in onnx)."""
    model = big_model(ir_version=8, weights_in_inputs=True)
    dims = next(vi for vi in model.graph.input if vi.name == "W").type.tensor_type.shape.dim
    dims[0].dim_value = 32
    assert light_twin(model) is None
    expected = _onnx_result(model, {"strict_mode": True})
    assert isinstance(expected, str)
    assert _ours(model, {"strict_mode": True}) == expected


def test_small_models_take_onnx_own_path(monkeypatch):
    model = big_model()
    monkeypatch.setattr(onnx_inference, "LARGE_BYTES", 1 << 30)
    assert light_twin(model) is None
    assert _ours(model, {}) == _onnx_result(model, {})
    assert LARGE_BYTES == 1 << 16
