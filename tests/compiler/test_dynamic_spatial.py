"""Symbolic height and width: encoder-decoder networks (a stride-2 layer, then x2 upsampling
or a ConvTranspose joined to the skip connection) compile once for every size, match ONNX
Runtime at the sizes the model accepts, and refuse the others in one line; a symbolic pad in
front of a library convolution; Dropout's mask and a Shape output with a symbolic batch."""

from __future__ import annotations

import subprocess
import sys

import anychip
import numpy as np
import onnx
import pytest
from anychip.compiler.errors import AnychipError
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def _weight(name, *shape):
    return numpy_helper.from_array((RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:])))
                                   .astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def unet_model() -> onnx.ModelProto:
    """conv -> stride-2 conv -> ConvTranspose x2 concatenated with the skip -> conv, plus a
    bilinear x2 Resize of the stride-2 map added to the output: Relax writes the decoder's
    height as (h - 1) // 2 * 2 + 2 and the Resize's as a float product, neither provably h."""
    inits = [_weight("w1", 8, 3, 3, 3), _weight("w2", 8, 8, 3, 3), _weight("wt", 8, 8, 2, 2),
             _weight("w3", 4, 16, 1, 1), _weight("w4", 4, 8, 1, 1),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["a"]),
             helper.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("ConvTranspose", ["b", "wt"], ["u"], strides=[2, 2]),
             helper.make_node("Concat", ["u", "a"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w3"], ["y0"]),
             helper.make_node("Conv", ["b", "w4"], ["side"]),
             helper.make_node("Resize", ["side", "", "scales"], ["up"], mode="linear"),
             helper.make_node("Add", ["y0", "up"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "h", "w"])], inits)


def reflect_pad_model() -> onnx.ModelProto:
    """Pad (reflect, 1 before and 2 after) -> Conv 3x3: the convolution's input is h + 3."""
    inits = [_weight("w", 4, 3, 3, 3),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 2, 2], np.int64), "pads")]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
             helper.make_node("Conv", ["p", "w"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "oh", "ow"])],
                  inits)


def pad_to_multiple_model() -> onnx.ModelProto:
    """Pad H and W up to a multiple of 8 with pads computed from Shape(x) ((8 - h % 8) % 8,
    as torch exports `F.pad(x, (0, (8 - w % 8) % 8, 0, (8 - h % 8) % 8))`), then a stride-2
    Conv: the pads are known only at run time."""
    ints = {"starts": [2], "ends": [4], "eight": [8], "zeros": [0, 0, 0, 0, 0, 0]}
    inits = [_weight("w", 4, 3, 3, 3)] + [numpy_helper.from_array(np.array(v, np.int64), k)
                                          for k, v in ints.items()]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "starts", "ends"], ["hw"]),
             helper.make_node("Mod", ["hw", "eight"], ["r"]),
             helper.make_node("Sub", ["eight", "r"], ["d"]),
             helper.make_node("Mod", ["d", "eight"], ["extra"]),
             helper.make_node("Concat", ["zeros", "extra"], ["pads"], axis=0),
             helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("Conv", ["p", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "oh", "ow"])],
                  inits)


def dropout_shape_model() -> onnx.ModelProto:
    """Relu -> Dropout (inference) with its mask, and the input's Shape, all as outputs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Dropout", ["r"], ["y", "mask"]),
             helper.make_node("Shape", ["x"], ["s"])]
    return _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16]),
                               helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 16]),
                               helper.make_tensor_value_info("s", TensorProto.INT64, [2])], [],
                  opset=13)


def test_a_unet_with_symbolic_height_and_width_matches_onnxruntime_on_cpu():
    report = anychip.verify(unet_model(), target="cpu", dims={"h": (8, 64), "w": (8, 64)})
    assert report.passed, report.summary()
    checked = [r.sizes for r in report.by_shape]
    assert {"n": 1, "h": 8, "w": 8} in checked and {"n": 64, "h": 64, "w": 64} in checked


def test_verify_moves_to_sizes_the_model_accepts():
    """With the default bounds (1..64) the lower bound and the midpoint (33) are sizes the
    U-Net rejects (ONNX Runtime too); verify checks the nearest even sizes instead."""
    report = anychip.verify(unet_model(), target="cpu")
    assert report.passed, report.summary()
    checked = [r.sizes for r in report.by_shape]
    assert all(s["h"] % 2 == 0 and s["w"] % 2 == 0 for s in checked), checked
    assert {"n": 64, "h": 64, "w": 64} in checked


def test_a_size_the_model_rejects_is_one_line_not_a_wrong_answer(tmp_path, capsys):
    from anychip.compiler.cli.main import main

    art = anychip.compile(unet_model(), target="cpu", dims={"h": (8, 64), "w": (8, 64)})
    odd = {"x": np.zeros((1, 3, 9, 9), np.float32)}
    with pytest.raises(AnychipError, match="do not agree at input sizes .*x 1x3x9x9.* 9 where "
                                           "the graph computes 10"):
        art.run(odd)
    art.save(tmp_path / "art")
    np.savez(tmp_path / "odd.npz", **odd)
    assert main(["run", str(tmp_path / "art"), "--inputs", str(tmp_path / "odd.npz"),
                 "-o", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not agree" in err[0], err
    assert not (tmp_path / "o.npz").exists()


def test_a_symbolic_pad_before_a_library_convolution():
    """The library call's composite states its input as 'h_1 + 3': its variables are bound to
    the caller's by matching the expressions (else the VM cannot size the call's output)."""
    report = anychip.verify(reflect_pad_model(), target="cpu", dispatch=True,
                            dims={"h": (4, 40), "w": (4, 40)})
    assert report.passed, report.summary()
    assert report.analysis["dispatch"]["total"] >= 1


@pytest.mark.parametrize("target", ["cpu", "ascend-910b"])
def test_dropout_mask_and_shape_outputs_with_a_symbolic_batch(target):
    report = anychip.verify(dropout_shape_model(), target=target, dims={"batch": (1, 16)})
    assert report.passed, report.summary()
    art = anychip.compile(dropout_shape_model(), target=target, dims={"batch": (1, 16)})
    rows = 5 if target == "cpu" else 8   # ascend: static programs at exact gears (the Shape
    out = art.run({"x": np.ones((rows, 16), np.float32)})   # output would see padding)
    assert out["s"].dtype == np.int64 and out["s"].tolist() == [rows, 16]
    assert out["mask"].dtype == np.bool_ and out["mask"].shape == (rows, 16)
    assert out["mask"].all()


def test_snapped_points_stay_within_bounds():
    from anychip.compiler.verify import snapped_points

    bounds = {"n": (1, 64), "h": (1, 40)}
    points = snapped_points({"n": 1, "h": 33}, bounds)
    assert points[0] == {"n": 2, "h": 34}
    assert {"n": 32, "h": 32} in points          # 64 is past h's bound: rounded down
    assert all(1 <= p["n"] <= 64 and 1 <= p["h"] <= 40 for p in points)


def test_onnx_attention_with_grouped_kv_heads_and_symbolic_batch_and_sequences():
    """ONNX Attention (opset 23) imports as its function body, which computes the head
    ratio from Shape(Q) and Shape(K) (Div, Mod of shape values: TVM refused them as 'cannot
    handle ShapeExpr inputs') and expands K and V to a shape built at run time (a reshape
    over dims known only then: a 45 s, memory-exhausting kernel build until it became a
    view)."""
    q = helper.make_tensor_value_info("Q", TensorProto.FLOAT, ["batch", 4, "qseq", 8])
    k = helper.make_tensor_value_info("K", TensorProto.FLOAT, ["batch", 2, "kvseq", 8])
    v = helper.make_tensor_value_info("V", TensorProto.FLOAT, ["batch", 2, "kvseq", 8])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4, "qseq", 8])
    model = _model([helper.make_node("Attention", ["Q", "K", "V"], ["Y"])], [q, k, v], [y], [],
                   opset=23)
    report = anychip.verify(model, target="cpu",
                            dims={"batch": (1, 3), "qseq": (1, 24), "kvseq": (1, 24)})
    assert report.passed, report.summary()
    assert len(report.by_shape) == 3


def test_pads_computed_from_the_input_shape():
    report = anychip.verify(pad_to_multiple_model(), target="cpu",
                            dims={"h": (5, 40), "w": (5, 40)})
    assert report.passed, report.summary()
    art = anychip.compile(pad_to_multiple_model(), target="cpu", dims={"h": (5, 40), "w": (5, 40)})
    assert art.run({"x": np.ones((1, 3, 17, 9), np.float32)})["y"].shape == (1, 4, 12, 8)


def test_an_import_failure_is_one_line_on_stderr_and_nothing_on_stdout(tmp_path, capfd):
    """TVM printed 'Error converting operator ...' to stdout and its C++ BlockBuilder logged
    'destroyed with remaining blocks' to stderr when freed: two lines beside anychip's one."""
    import gc

    from anychip.compiler.cli.main import main

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b", "c"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c"])
    path = tmp_path / "hardmax.onnx"
    onnx.save(_model([helper.make_node("Hardmax", ["x"], ["y"], axis=0)], [x], [y], []), path)
    assert main(["compile", str(path), "--target", "cpu", "-o", str(tmp_path / "art")]) == 2
    gc.collect()
    out, err = capfd.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "Hardmax" in err, err


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_same_padding_over_a_symbolic_image_size(mode):
    """TensorFlow exports write SAME as auto_pad; with a dynamic image size the pads of a
    strided layer depend on the size modulo the stride (TVM's converter failed on the
    symbolic extent): a stride-2 Conv, a stride-2 MaxPool and a stride-1 AveragePool."""
    w = numpy_helper.from_array((RNG.standard_normal((8, 3, 3, 3)) / 5).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], auto_pad=mode, strides=[2, 2]),
             helper.make_node("MaxPool", ["c"], ["m"], auto_pad=mode, kernel_shape=[3, 3],
                              strides=[2, 2]),
             helper.make_node("AveragePool", ["m"], ["y"], auto_pad=mode, kernel_shape=[2, 2])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, "oh", "ow"])],
                   [w])
    report = anychip.verify(model, target="cpu", dims={"n": (1, 2), "h": (5, 31), "w": (4, 23)})
    assert report.passed, report.summary()
    sizes = [r.sizes for r in report.by_shape]
    assert any(s["h"] % 2 and s["w"] % 2 == 0 for s in sizes), sizes   # odd and even sizes


def wide_reflect_pad(shape) -> onnx.ModelProto:
    """A reflect Pad of 4 on H and W: defined only for H, W >= 5 (ONNX Runtime refuses less);
    TVM's mirror_pad read past the input's buffer below that (garbage values)."""
    out = [d if isinstance(d, int) and i < 2 else (d + 8 if isinstance(d, int) else f"o{i}")
           for i, d in enumerate(shape)]
    pads = numpy_helper.from_array(np.array([0, 0, 4, 4, 0, 0, 4, 4], np.int64), "pads")
    return _model([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], [pads])


def test_a_reflect_pad_wider_than_a_static_axis_is_one_line(tmp_path):
    from anychip.compiler.errors import InputsRejected

    with pytest.raises(InputsRejected, match=r"^<ModelProto g>: Pad \(reflect\): a pad of 4 on "
                                             r"axis 2 needs the axis to be at least 5 long, "
                                             r"and it is 3"):
        anychip.compile(wide_reflect_pad([1, 2, 3, 3]), target="cpu")
    path = tmp_path / "pad.onnx"
    onnx.save(wide_reflect_pad([1, 2, 3, 3]), path)
    done = subprocess.run([sys.executable, "-m", "anychip.compiler.cli.main", "compile",
                           str(path), "--target", "cpu", "-o", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "a").exists()


def test_a_reflect_pad_wider_than_a_symbolic_axis_is_refused_at_run_time():
    from anychip.compiler.errors import InputsRejected

    art = anychip.compile(wide_reflect_pad([1, 2, "h", "w"]), target="cpu",
                          dims={"h": (2, 16), "w": (2, 16)})
    x = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
    want = np.pad(x, [(0, 0), (0, 0), (4, 4), (4, 4)], mode="reflect")
    np.testing.assert_array_equal(art.run({"x": x})["y"], want)
    with pytest.raises(InputsRejected, match=r"refused these inputs \(x 1x2x4x9\): one of its "
                                             r"run-time checks failed \(a reflect"):
        art.run({"x": np.ones((1, 2, 4, 9), np.float32)})


def test_npu_gears_the_model_refuses_are_left_out():
    report = anychip.verify(wide_reflect_pad([1, 2, "h", "w"]), target="ascend-910b",
                            dims={"h": (2, 8), "w": (8, 8)})
    assert report.passed, report.summary()
    art = anychip.compile(wide_reflect_pad([1, 2, "h", "w"]), target="ascend-910b",
                          dims={"h": (2, 8), "w": (8, 8)})
    assert [g["sizes"] for g in art.manifest["gears"]] == [{"h": 8, "w": 8}]
    assert [r["sizes"] for r in art.report["gears_refused"]] == [{"h": 2, "w": 8},
                                                                 {"h": 4, "w": 8}]
