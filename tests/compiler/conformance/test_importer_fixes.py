"""Importer fixes keep the model's meaning: each prepared model gives ONNX Runtime's outputs
of the original; the shape-input guard refuses a value it was not compiled for."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from anychip.compiler.backend import CompileOptions
from anychip.compiler.driver import compile_source
from anychip.compiler.errors import InputsRejected
from anychip.compiler.frontend import load_model
from anychip.compiler.importer_fixes import NotSupported, prepare_for_tvm, specialise_for


def _model(nodes, inputs, outputs, opset=17, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ort(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feed)


def _same_outputs(model: onnx.ModelProto, feed: dict) -> onnx.ModelProto:
    prepared = prepare_for_tvm(load_model(model)).proto
    for got, want in zip(_ort(prepared, feed), _ort(model, feed)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    return prepared


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_celu_expanded_to_its_function_body():
    model = _model([helper.make_node("Celu", ["x"], ["y"], alpha=2.0)],
                   [_vi("x", TensorProto.FLOAT, [3, 4])], [_vi("y", TensorProto.FLOAT, [3, 4])],
                   opset=12)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    prepared = _same_outputs(model, {"x": x})
    ops = [n.op_type for n in prepared.graph.node]
    assert "Celu" not in ops and "Elu" in ops


def test_constant_value_ints_becomes_a_tensor():
    model = _model([helper.make_node("Constant", [], ["s"], value_ints=[4, 3]),
                    helper.make_node("Reshape", ["x", "s"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [3, 4])], [_vi("y", TensorProto.FLOAT, [4, 3])])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    prepared = _same_outputs(model, {"x": x})
    const = prepared.graph.node[0]
    assert [a.name for a in const.attribute] == ["value"]


def test_shape_arithmetic_folds_to_constants():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ReduceProd", ["s"], ["n"], keepdims=1),
             helper.make_node("Reshape", ["x", "n"], ["flat"]),
             helper.make_node("Shape", ["x"], ["y"])]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 3])],
                   [_vi("flat", TensorProto.FLOAT, [6]), _vi("y", TensorProto.INT64, [2])])
    prepared = _same_outputs(model, {"x": np.ones((2, 3), np.float32)})
    assert [n.op_type for n in prepared.graph.node] == ["Constant", "Constant", "Reshape",
                                                        "Constant"]


def test_scan_is_unrolled():
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y_t"])], "body",
        [_vi("s_in", TensorProto.FLOAT, [2]), _vi("x_t", TensorProto.FLOAT, [2])],
        [_vi("s_out", TensorProto.FLOAT, [2]), _vi("y_t", TensorProto.FLOAT, [2])])
    scan = helper.make_node("Scan", ["init", "x"], ["final", "ys"], body=body,
                            num_scan_inputs=1, scan_input_directions=[1])
    model = _model([scan], [_vi("init", TensorProto.FLOAT, [2]), _vi("x", TensorProto.FLOAT, [4, 2])],
                   [_vi("final", TensorProto.FLOAT, [2]), _vi("ys", TensorProto.FLOAT, [4, 2])])
    feed = {"init": np.ones(2, np.float32),
            "x": np.arange(8, dtype=np.float32).reshape(4, 2)}
    prepared = _same_outputs(model, feed)
    assert "Scan" not in {n.op_type for n in prepared.graph.node}


def test_lstm_is_unrolled_in_both_directions():
    rng = np.random.default_rng(1)
    hidden, inputs, dirs = 3, 2, 2
    w = helper.make_tensor("W", TensorProto.FLOAT, [dirs, 4 * hidden, inputs],
                           rng.standard_normal(dirs * 4 * hidden * inputs).tolist())
    r = helper.make_tensor("R", TensorProto.FLOAT, [dirs, 4 * hidden, hidden],
                           rng.standard_normal(dirs * 4 * hidden * hidden).tolist())
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y", "y_h", "y_c"], hidden_size=hidden,
                            direction="bidirectional")
    model = _model([node], [_vi("x", TensorProto.FLOAT, [4, 1, inputs])],
                   [_vi("y", TensorProto.FLOAT, [4, dirs, 1, hidden]),
                    _vi("y_h", TensorProto.FLOAT, [dirs, 1, hidden]),
                    _vi("y_c", TensorProto.FLOAT, [dirs, 1, hidden])], inits=[w, r])
    prepared = _same_outputs(model, {"x": rng.standard_normal((4, 1, inputs)).astype(np.float32)})
    assert "LSTM" not in {n.op_type for n in prepared.graph.node}



@pytest.mark.parametrize("image,strides,pads,dilations",
                         [([8, 7], [2, 2], [0, 0, 0, 0], [1, 1]),   # a row no block reaches
                          ([6, 6], [1, 2], [1, 0, 1, 1], [2, 1])])
def test_col2im_is_a_grouped_conv_transpose_under_a_symbolic_batch(image, strides, pads,
                                                                    dilations):
    """torch's F.fold exports Col2Im (MobileViT-V2), which TVM's importer lacks."""
    channels, block = 3, [3, 2]
    spans = [d * (k - 1) + 1 for d, k in zip(dilations, block)]
    counts = [(i + pads[a] + pads[a + 2] - spans[a]) // strides[a] + 1
              for a, i in enumerate(image)]
    shape_inits = [helper.make_tensor("image", TensorProto.INT64, [2], image),
                   helper.make_tensor("block", TensorProto.INT64, [2], block)]
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"], strides=strides,
                            pads=pads, dilations=dilations)
    model = _model([node], [_vi("x", TensorProto.FLOAT,
                                ["n", channels * 6, counts[0] * counts[1]])],
                   [_vi("y", TensorProto.FLOAT, ["n", channels, *image])], opset=18,
                   inits=shape_inits)
    x = np.random.default_rng(2).standard_normal(
        (2, channels * 6, counts[0] * counts[1])).astype(np.float32)
    prepared = _same_outputs(model, {"x": x})
    assert "Col2Im" not in {n.op_type for n in prepared.graph.node}

def test_reverse_sequence_is_decomposed():
    node = helper.make_node("ReverseSequence", ["x", "lens"], ["y"], batch_axis=1, time_axis=0)
    model = _model([node], [_vi("x", TensorProto.FLOAT, [4, 3]), _vi("lens", TensorProto.INT64, [3])],
                   [_vi("y", TensorProto.FLOAT, [4, 3])])
    feed = {"x": np.arange(12, dtype=np.float32).reshape(4, 3), "lens": np.array([4, 2, 1])}
    prepared = _same_outputs(model, feed)
    assert "ReverseSequence" not in {n.op_type for n in prepared.graph.node}


def test_string_tensors_are_refused_as_unsupported():
    model = _model([helper.make_node("Identity", ["x"], ["y"])],
                   [_vi("x", TensorProto.STRING, [2])], [_vi("y", TensorProto.STRING, [2])])
    with pytest.raises(NotSupported, match="element type string"):
        prepare_for_tvm(load_model(model))


def test_specialised_shape_input_is_kept_and_guarded():
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [2, 6]), _vi("shape", TensorProto.INT64, [2])],
                   [_vi("y", TensorProto.FLOAT, [3, 4])])
    source = load_model(model)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    notes = specialise_for(source, {"x": x, "shape": np.array([3, 4])})
    assert notes == ["specialised shape=[3,4]"]
    artifact = compile_source(source, "cpu", CompileOptions())
    assert [s.name for s in artifact.inputs] == ["x", "shape"]     # still an input
    out = artifact.run({"x": x, "shape": np.array([3, 4])})
    np.testing.assert_array_equal(out["y"], x.reshape(3, 4))
    with pytest.raises(InputsRejected, match=r"\(x 2x6, shape 2\): one of its run-time checks "
                                             r"failed"):
        artifact.run({"x": x, "shape": np.array([4, 3])})


def test_specialised_shape_input_reaches_the_npu_import():
    """The npu backend re-imports the ONNX model (its simulated form): the specialised values
    must reach that import too."""
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [2, 6]), _vi("shape", TensorProto.INT64, [2])],
                   [_vi("y", TensorProto.FLOAT, [3, 4])])
    source = load_model(model)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    specialise_for(source, {"x": x, "shape": np.array([3, 4])})
    artifact = compile_source(source, "ascend-910b", CompileOptions())
    out = artifact.run({"x": x, "shape": np.array([3, 4])})
    np.testing.assert_allclose(out["y"], x.reshape(3, 4), rtol=1e-3)


def test_non_max_suppression_keeps_a_box_at_the_iou_threshold():
    """ONNX suppresses at IoU > threshold (TVM's kernel at >=); the count, threshold and
    score threshold are graph inputs, specialised."""
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "n", "iou", "score"],
                            ["selected"])
    model = _model([node], [_vi("boxes", TensorProto.FLOAT, [1, 3, 4]),
                            _vi("scores", TensorProto.FLOAT, [1, 1, 3]),
                            _vi("n", TensorProto.INT64, [1]), _vi("iou", TensorProto.FLOAT, [1]),
                            _vi("score", TensorProto.FLOAT, [1])],
                   [_vi("selected", TensorProto.INT64, [None, 3])], opset=11)
    boxes = np.array([[[0, 0, 1, 1], [0.5, 0.5, 1.5, 1.5], [0, 0, 1, 1.05]]], np.float32)
    feed = {"boxes": boxes, "scores": np.array([[[0.9, 0.8, 0.7]]], np.float32),
            "n": np.array([3]), "iou": np.array([0.25 / 1.75], np.float32),
            "score": np.array([0.0], np.float32)}
    source = load_model(model)
    assert len(specialise_for(source, feed)) == 3
    out = compile_source(source, "cpu", CompileOptions()).run(feed)
    expected = _ort(model, feed)[0]
    assert expected.shape == (2, 3)
    np.testing.assert_array_equal(out["selected"], expected)


def test_pad_takes_its_constant_value_at_run_time():
    node = helper.make_node("Pad", ["x", "pads", "value", "axes"], ["y"], mode="constant")
    model = _model([node], [_vi("x", TensorProto.FLOAT, [2, 3]),
                            _vi("pads", TensorProto.INT64, [2]),
                            _vi("value", TensorProto.FLOAT, []),
                            _vi("axes", TensorProto.INT64, [1])],
                   [_vi("y", TensorProto.FLOAT, [2, 6])], opset=19)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    feed = {"x": x, "pads": np.array([1, 2]), "value": np.array(1.5, np.float32),
            "axes": np.array([-1])}
    source = load_model(model)
    assert specialise_for(source, feed) == ["specialised pads=[1,2]", "specialised axes=[-1]"]
    artifact = compile_source(source, "cpu", CompileOptions())
    for value in (1.5, -7.0):      # not specialised: a run-time value
        feed["value"] = np.array(value, np.float32)
        np.testing.assert_array_equal(artifact.run(feed)["y"], _ort(model, feed)[0])


def _compiled(model, feed, target="cpu"):
    source = load_model(model)
    return compile_source(source, target, CompileOptions()).run(feed)


def test_dropout_mask_is_bool_and_random_dropout_is_refused_at_run_time():
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "mask"])
    model = _model([node], [_vi("x", TensorProto.FLOAT, [2, 3]), _vi("r", TensorProto.FLOAT, []),
                            _vi("t", TensorProto.BOOL, [])],
                   [_vi("y", TensorProto.FLOAT, [2, 3]), _vi("mask", TensorProto.BOOL, [2, 3])],
                   opset=13)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    artifact = compile_source(load_model(model), "cpu", CompileOptions())   # not specialised
    feed = {"x": x, "r": np.array(0.5, np.float32), "t": np.array(False)}
    out = artifact.run(feed)
    np.testing.assert_array_equal(out["y"], x)
    assert out["mask"].dtype == np.bool_ and out["mask"].all()
    with pytest.raises(InputsRejected, match=r"\(x 2x3, r scalar, t scalar\): one of its "
                                             r"run-time checks failed"):
        artifact.run({**feed, "t": np.array(True)})


def test_eyelike_mod_and_bool_or_empty_reductions_match_numpy():
    """(ONNX Runtime refuses float Mod with fmod=0 before opset 28: numpy is the reference.)"""
    nodes = [helper.make_node("EyeLike", ["i"], ["eye"], dtype=TensorProto.DOUBLE, k=1),
             helper.make_node("Mod", ["a", "b"], ["mod"], fmod=0),
             helper.make_node("ReduceMax", ["flags", "ax"], ["any"], keepdims=0),
             helper.make_node("ReduceMin", ["flags", "ax"], ["all"], keepdims=0),
             helper.make_node("ReduceMax", ["empty", "ax"], ["max_empty"], keepdims=1)]
    axes = helper.make_tensor("ax", TensorProto.INT64, [1], [1])
    model = _model(nodes, [_vi("i", TensorProto.INT32, [3, 4]), _vi("a", TensorProto.FLOAT, [6]),
                           _vi("b", TensorProto.FLOAT, [6]), _vi("flags", TensorProto.BOOL, [2, 3]),
                           _vi("empty", TensorProto.FLOAT, [2, 0, 3])],
                   [_vi("eye", TensorProto.DOUBLE, [3, 4]), _vi("mod", TensorProto.FLOAT, [6]),
                    _vi("any", TensorProto.BOOL, [2]), _vi("all", TensorProto.BOOL, [2]),
                    _vi("max_empty", TensorProto.FLOAT, [2, 1, 3])], opset=20, inits=[axes])
    feed = {"i": np.zeros((3, 4), np.int32),
            "a": np.array([-3, 3, -1, 1, 5.5, -5.5], np.float32),
            "b": np.array([np.inf, np.inf, -np.inf, -np.inf, -2, 2], np.float32),
            "flags": np.array([[True, False, True], [True, True, True]]),
            "empty": np.zeros((2, 0, 3), np.float32)}
    out = _compiled(model, feed)
    expected = [np.eye(3, 4, k=1), np.mod(feed["a"], feed["b"]), feed["flags"].any(1),
                feed["flags"].all(1), np.full((2, 1, 3), -np.inf, np.float32)]
    for name, want in zip(["eye", "mod", "any", "all", "max_empty"], expected):
        assert out[name].dtype == want.dtype, name
        np.testing.assert_array_equal(out[name], want, err_msg=name)


def test_zero_size_results_compile_and_run():
    """A Slice starting past the end and a Split with zero-size parts give empty tensors (the
    cpu scheduler fused their zero-extent loops and divided by zero)."""
    nodes = [helper.make_node("Slice", ["x", "start", "end", "axis"], ["empty"]),
             helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=1),
             helper.make_node("Add", ["x", "x"], ["twice"])]
    inits = [helper.make_tensor("start", TensorProto.INT64, [1], [9]),
             helper.make_tensor("end", TensorProto.INT64, [1], [12]),
             helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
             helper.make_tensor("sizes", TensorProto.INT64, [3], [0, 4, 0])]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 4])],
                   [_vi("empty", TensorProto.FLOAT, [2, 0]), _vi("a", TensorProto.FLOAT, [2, 0]),
                    _vi("b", TensorProto.FLOAT, [2, 4]), _vi("c", TensorProto.FLOAT, [2, 0]),
                    _vi("twice", TensorProto.FLOAT, [2, 4])], opset=18, inits=inits)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = _compiled(model, {"x": x})
    for name, want in zip(["empty", "a", "b", "c", "twice"], _ort(model, {"x": x})):
        assert out[name].shape == want.shape, name
        np.testing.assert_array_equal(out[name], want)


def test_float16_attention_is_computed_in_float32():
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"])
    shape = [1, 2, 3, 8]
    model = _model([node], [_vi(n, TensorProto.FLOAT16, shape) for n in "qkv"],
                   [_vi("y", TensorProto.FLOAT16, shape)], opset=23)
    rng = np.random.default_rng(3)
    feed = {n: rng.standard_normal(shape).astype(np.float16) for n in "qkv"}
    prepared = prepare_for_tvm(load_model(model))
    assert "attention_in_float32" in prepared.extra["importer_fixes"]
    q, k, v = (feed[n].astype(np.float32) for n in "qkv")
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(8)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    want = ((weights / weights.sum(-1, keepdims=True)) @ v).astype(np.float16)
    got = _compiled(model, feed)["y"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3,
                               atol=1e-3)


def test_out_of_range_bitshift_and_crd_space_to_depth_match_the_reference():
    from onnx.reference import ReferenceEvaluator

    nodes = [helper.make_node("BitShift", ["a", "n"], ["left"], direction="LEFT"),
             helper.make_node("BitShift", ["a", "n"], ["right"], direction="RIGHT"),
             helper.make_node("SpaceToDepth", ["x"], ["crd"], blocksize=2, mode="CRD")]
    model = _model(nodes, [_vi("a", TensorProto.INT32, [5]), _vi("n", TensorProto.INT32, [5]),
                           _vi("x", TensorProto.FLOAT, [1, 2, 4, 6])],
                   [_vi("left", TensorProto.INT32, [5]), _vi("right", TensorProto.INT32, [5]),
                    _vi("crd", TensorProto.FLOAT, [1, 8, 2, 3])], opset=28)
    feed = {"a": np.array([-8, 4, -1, 3, -5], np.int32), "n": np.array([32, 33, -1, 2, 40], np.int32),
            "x": np.arange(48, dtype=np.float32).reshape(1, 2, 4, 6)}
    out = _compiled(model, feed)
    for name, want in zip(["left", "right", "crd"], ReferenceEvaluator(model).run(None, feed)):
        np.testing.assert_array_equal(out[name], want, err_msg=name)


@pytest.mark.parametrize("n", [1, 3, 4])
def test_det_matches_numpy(n):
    model = _model([helper.make_node("Det", ["x"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [2, n, n])], [_vi("y", TensorProto.FLOAT, [2])])
    x = np.random.default_rng(n).standard_normal((2, n, n)).astype(np.float32)
    np.testing.assert_allclose(_compiled(model, {"x": x})["y"], np.linalg.det(x), rtol=1e-4,
                               atol=1e-5)


def test_upsample_takes_its_scales_as_an_input():
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 3])
    model = _model([helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")],
                   [_vi("x", TensorProto.FLOAT, [1, 1, 2, 3])],
                   [_vi("y", TensorProto.FLOAT, [1, 1, 4, 9])], opset=9, inits=[scales])
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(_compiled(model, {"x": x})["y"], _ort(model, {"x": x})[0])


@pytest.mark.parametrize("opset, bounds", [
    (13, {"lo": 0.0, "hi": 6.0}), (13, {"lo": 2.0, "hi": -1.0}),      # lo > hi: all hi
    (13, {"lo": np.nan, "hi": 1.0}), (13, {"hi": 0.5}), (13, {"lo": "input"}),
    (6, {"lo": -0.5, "hi": 0.25}), (12, {"lo": 1, "hi": 3, "int": True})])
def test_clip_is_relax_maximum_and_minimum_with_onnx_semantics(opset, bounds):
    """Clip's bounds as constants (a NaN one: no bound; relax.clip), a run-time input,
    attributes (opset 6), integers (relax maximum/minimum); lo > hi gives hi; a NaN input
    stays NaN; a missing bound is the type's lowest/largest (-inf -> -3.4e38). Outputs as
    ONNX Runtime's."""
    integer = bounds.get("int", False)
    dtype, np_dtype = (TensorProto.INT32, np.int32) if integer else (TensorProto.FLOAT,
                                                                     np.float32)
    rng = np.random.default_rng(opset)
    x = (rng.standard_normal((2, 3, 5)) * 4).astype(np_dtype)
    if not integer:
        x[0, 0, :3] = [np.nan, np.inf, -np.inf]
    feed, inputs, inits, names = {"x": x}, [_vi("x", dtype, [2, 3, 5])], [], ["x"]
    attrs = {}
    for key in ("lo", "hi"):
        value = bounds.get(key)
        if value is None:
            names.append("")
        elif opset < 11:
            attrs["min" if key == "lo" else "max"] = float(value)
        elif value == "input":
            inputs.append(_vi(key, dtype, []))
            feed[key] = np.array(-1.0, np_dtype)
            names.append(key)
        else:
            inits.append(onnx.numpy_helper.from_array(np.array(value, np_dtype), key))
            names.append(key)
    node = helper.make_node("Clip", names if opset >= 11 else ["x"], ["y"], **attrs)
    model = _model([node], inputs, [_vi("y", dtype, [2, 3, 5])], opset=opset, inits=inits)
    got = _compiled(model, feed)["y"]
    np.testing.assert_array_equal(got, _ort(model, feed)[0])


def test_clip_between_convolutions_fuses_into_their_kernels():
    """ReLU6 (Clip 0..6) between NCHW convolutions: no transpose to NCHW and back around it
    (TVM's converter emitted TE kernels the layout conversion could not see through; a
    MobileNet-v2-like network spent 68% of its run in those transposes); the clip is in the
    first convolution's kernel."""
    from onnx import numpy_helper

    from anychip.compiler.profiler import profile_model

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) / 4, n)
             for n, s in (("w1", (16, 8, 3, 3)), ("w2", (16, 16, 1, 1)))]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("lo", 0.0), ("hi", 6.0))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [1, 8, 20, 20])],
                   [_vi("y", TensorProto.FLOAT, [1, 16, 20, 20])], inits=inits)
    x = rng.standard_normal((1, 8, 20, 20)).astype(np.float32) * 8
    np.testing.assert_allclose(_compiled(model, {"x": x})["y"], _ort(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)
    prof, _ = profile_model(model, "cpu", runs=2, dispatch=False)
    transposes = [e.name for e in prof.entries if "transpose" in e.name]
    assert len(transposes) <= 2, transposes            # the input's and the output's
    assert any("conv2d" in e.name and "clip" in e.name for e in prof.entries), \
        [e.name for e in prof.entries]


def _group_norm_model(target_shape, dtype=TensorProto.FLOAT):
    """torch's GroupNorm(3, 6) export on [2, 6, 4, 5] (a 4-D target: not a GroupNorm)."""
    from onnx import numpy_helper

    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(dtype)
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(np.array(target_shape, np.int64), "to_groups"),
             numpy_helper.from_array(np.array([2, 6, 4, 5], np.int64), "back"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 3).astype(np_dtype), "s"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np_dtype), "b")]
    nodes = [helper.make_node("Reshape", ["x", "to_groups"], ["g"]),
             helper.make_node("InstanceNormalization", ["g", "s", "b"], ["gn"],
                              epsilon=0.01) if len(target_shape) == 3 else
             helper.make_node("Identity", ["g"], ["gn"]),
             helper.make_node("Reshape", ["gn", "back"], ["y"])]
    return _model(nodes, [_vi("x", dtype, [2, 6, 4, 5])], [_vi("y", dtype, [2, 6, 4, 5])],
                  inits=inits)


@pytest.mark.parametrize("target_shape, fused", [([0, 3, -1], True), ([2, 3, 40], True),
                                                 ([2, 3, 4, 10], False)])
def test_group_norm_export_becomes_channel_ops_with_the_same_values(target_shape, fused):
    """torch's GroupNorm export (Reshape to [N, G, -1], InstanceNormalization with per-group
    scale and bias, Reshape back) is replaced by ops the NHWC conversion carries; the values
    are ONNX Runtime's on the original, per-group scale/bias and epsilon included. Another
    reshape (4-D) is left as it is."""
    model = _group_norm_model(target_shape)
    x = (np.random.default_rng(5).standard_normal((2, 6, 4, 5)) * 3 + 1).astype(np.float32)
    prepared = prepare_for_tvm(load_model(model))
    ops = [n.op_type for n in prepared.proto.graph.node]
    assert ("InstanceNormalization" not in ops and "Reshape" not in ops) == fused, ops
    if fused:
        assert any("group_norms" in f for f in prepared.extra["importer_fixes"])
    np.testing.assert_allclose(_compiled(model, {"x": x})["y"], _ort(model, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)


def test_float16_group_norm_keeps_its_type():
    """A float16 GroupNorm gets float16 constants (the value types come from ONNX shape
    inference: the reshaped value has no declared type); values within float16 rounding of
    the float32 model's in ONNX Runtime."""
    model16 = _group_norm_model([0, 3, -1], TensorProto.FLOAT16)
    x = (np.random.default_rng(5).standard_normal((2, 6, 4, 5)) * 3 + 1).astype(np.float16)
    prepared = prepare_for_tvm(load_model(model16))
    assert "InstanceNormalization" not in [n.op_type for n in prepared.proto.graph.node]
    got = _compiled(model16, {"x": x})["y"]
    assert got.dtype == np.float16
    want = _ort(_group_norm_model([0, 3, -1]), {"x": x.astype(np.float32)})[0]
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("op, mode, stride, dilation, size", [
    ("Conv", "SAME_UPPER", 2, 1, 7), ("Conv", "SAME_LOWER", 2, 1, 7),
    ("Conv", "SAME_UPPER", 3, 1, 8), ("Conv", "VALID", 2, 1, 7),   # ORT: no SAME + dilation
    ("MaxPool", "SAME_UPPER", 2, 1, 8), ("MaxPool", "SAME_LOWER", 3, 1, 7),
    ("AveragePool", "SAME_UPPER", 2, 1, 7), ("AveragePool", "SAME_LOWER", 2, 1, 6),
])
def test_auto_pad_becomes_explicit_pads_with_the_same_values(op, mode, stride, dilation, size):
    """auto_pad (tf2onnx's SAME) is written as the spec's explicit pads, odd totals at the end
    (UPPER) or the beginning (LOWER): no separate pad kernel; values are ONNX Runtime's on the
    original, the average not counting the pad. A symbolic batch keeps the rewrite."""
    rng = np.random.default_rng(9)
    attrs = dict(auto_pad=mode, strides=[stride, stride], kernel_shape=[3, 3])
    inits = []
    inputs = ["x"]
    if op == "Conv":
        attrs["dilations"] = [dilation, dilation]
        inits.append(onnx.numpy_helper.from_array(
            rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"))
        inputs.append("w")
    node = helper.make_node(op, inputs, ["y"], **attrs)
    reach = 2 * dilation + 1
    out = [-(-d // stride) if mode != "VALID" else (d - reach) // stride + 1
           for d in (size, size + 1)]
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                          ["n", 3, size, size + 1])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                  ["n", 4 if op == "Conv" else 3, *out])],
                   inits=inits)
    prepared = prepare_for_tvm(load_model(model))
    node = prepared.proto.graph.node[0]
    assert "auto_pad" not in [a.name for a in node.attribute]
    assert any("explicit_auto_pads(1)" == f for f in prepared.extra["importer_fixes"])
    x = rng.standard_normal((2, 3, size, size + 1)).astype(np.float32)
    np.testing.assert_allclose(_compiled(model, {"x": x})["y"], _ort(model, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)


def test_auto_pad_with_ceil_mode_or_unknown_sizes_is_left():
    pool = helper.make_node("MaxPool", ["x"], ["y"], auto_pad="SAME_UPPER", kernel_shape=[3, 3],
                            strides=[2, 2], ceil_mode=1)
    model = _model([pool], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 7, 7])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])])
    assert "auto_pad" in [a.name for a in prepare_for_tvm(load_model(model)).proto.graph
                          .node[0].attribute]


@pytest.mark.parametrize("pool", [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], storage_order=1),
    dict(kernel_shape=[3, 2], strides=[2, 1], dilations=[2, 1], ceil_mode=1),
])
def test_max_pool_indices_feed_max_unpool_as_onnxruntime(pool):
    """SegNet's encoder/decoder pair: conv -> MaxPool (values and Indices) -> MaxUnpool with
    those indices back to the conv's 9x9 (output_shape). TVM's converter gave no Indices; both outputs and the unpooled
    result are ONNX Runtime's (integers exactly), ties and windows over the padding
    included (the input has repeated values)."""
    rng = np.random.default_rng(12)
    w = onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),     # zeros: ties inside windows
             helper.make_node("MaxPool", ["r"], ["p", "i"], **pool)]
    unpool = {k: v for k, v in pool.items() if k in ("kernel_shape", "strides", "pads")}
    if not any(k in pool for k in ("dilations", "ceil_mode", "storage_order")):
        nodes.append(helper.make_node("MaxUnpool", ["p", "i", "shape"], ["u"], **unpool))
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 9])],
                   [helper.make_tensor_value_info(n, t, None) for n, t in
                    [("p", TensorProto.FLOAT), ("i", TensorProto.INT64)]]
                   + ([helper.make_tensor_value_info("u", TensorProto.FLOAT, [2, 4, 9, 9])]
                      if len(nodes) == 4 else []),
                   inits=[w, onnx.numpy_helper.from_array(np.array([2, 4, 9, 9]), "shape")])
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    got, want = _compiled(model, {"x": x}), _ort(model, {"x": x})
    for name, expected in zip([o.name for o in model.graph.output], want):
        if expected.dtype == np.int64:
            np.testing.assert_array_equal(got[name], expected)
        else:
            np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16])
def test_mish_with_one_exp_matches_onnxruntime_over_its_range(dtype):
    """Mish as x * n / (n + 2), n = e^x (e^x + 2): ONNX Runtime's values from -100 to 100
    (past each type's threshold where the result is x, and where e^x overflows), NaN kept."""
    np_type = np.float32 if dtype == TensorProto.FLOAT else np.float16
    x = np.concatenate([np.linspace(-30, 30, 241), [-100, 100, 4.9, 5.1, 19.9, 20.1, 0, 1e-3,
                                                     -1e-3, 44.0, 89.0, np.nan]])
    x = x.astype(np_type).reshape(1, -1)
    model = _model([helper.make_node("Mish", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", dtype, list(x.shape))],
                   [helper.make_tensor_value_info("y", dtype, list(x.shape))], opset=18)
    prepared = prepare_for_tvm(load_model(model))
    assert [n.op_type for n in prepared.proto.graph.node] == ["Mish"]
    got = _compiled(model, {"x": x})["y"]
    want = _ort(model, {"x": x})[0]
    assert np.isnan(got[0, -1]) and np.isnan(want[0, -1])
    tol = 1e-6 if dtype == TensorProto.FLOAT else 2e-3
    np.testing.assert_allclose(got[0, :-1].astype(np.float64), want[0, :-1].astype(np.float64),
                               rtol=tol, atol=tol)


def test_max_pool_indices_of_a_huge_window_are_refused_in_one_line():
    """A 40x40 window's Indices would be 1600 stacked slices: refused (exit 2, the reason),
    not built."""
    from anychip.compiler.errors import AnychipError

    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[40, 40])
    model = _model([pool], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 40, 40])],
                   [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 1, 1, 1]),
                    helper.make_tensor_value_info("i", TensorProto.INT64, [1, 1, 1, 1])])
    with pytest.raises(AnychipError, match="40x40 window") as info:
        _compiled(model, {"x": np.zeros((1, 1, 40, 40), np.float32)})
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
