"""compiler/importer_fixes/shape_arith.py and shape_converters.py: a Range whose limit is arithmetic on a Shape value
(the TorchScript exporter's `Range(0, max(-((0 - n) // 1), 0), 1)`) keeps the input's symbol
as its length, so what is built from it broadcasts with the model's tensors; TVM's converter
gave it a fresh variable read at run time, and the build failed ("PrimExpr ... has not been
computed"). Matches ONNX Runtime at every size verify picks."""

from __future__ import annotations

import anychip
import numpy as np
from anychip.compiler import driver, importer
from onnx import TensorProto, helper, numpy_helper


def _const(name, value):
    return numpy_helper.from_array(np.array(value, np.int64), name)


def positions_model():
    """x [batch, seq, 4] plus its positions 0..seq-1 (`Range(0, Shape(x)[1], 1)`, as the
    TorchScript exporter writes Hugging Face's position and mask ranges), and the odd
    positions 1, 3, ... below seq, the limit computed with tensor ops on the shape."""
    inits = [_const("zero", 0), _const("one", 1), _const("two", 2), _const("idx1", 1),
             _const("idx1v", [1]), _const("zerov", [0]), _const("axes", [0, 2]),
             _const("axis0", [0])]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "idx1"], ["n"], axis=0),
             helper.make_node("Range", ["zero", "n", "one"], ["pos"]),
             helper.make_node("Cast", ["pos"], ["posf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["posf", "axes"], ["pos3"]),
             helper.make_node("Add", ["x", "pos3"], ["y"]),
             helper.make_node("Gather", ["shape", "idx1v"], ["nv"], axis=0),
             helper.make_node("Add", ["nv", "zerov"], ["mv"]),
             helper.make_node("Squeeze", ["mv", "axis0"], ["m"]),
             helper.make_node("Range", ["one", "m", "two"], ["odd"])]
    graph = helper.make_graph(
        nodes, "positions",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4]),
         helper.make_tensor_value_info("odd", TensorProto.INT64, ["k"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_range_over_shape_arithmetic_keeps_the_symbol():
    source = driver.load_model(positions_model(), dims={"seq": (3, 40)})
    text = importer.to_relax(source)["main"].script()
    assert "range_len" not in text, text   # TVM's converter: a fresh variable per Range
    assert "R.arange(0, seq, 1" in text, text
    assert "R.arange(0, seq // 2, 1" in text, text   # ceil((seq - 1) / 2) odd positions


def test_range_over_shape_arithmetic_matches_onnx_runtime():
    report = anychip.verify(positions_model(), target="cpu", dims={"seq": (3, 40),
                                                                   "batch": (1, 4)})
    assert report.passed, report.summary()
    assert [r.sizes for r in report.by_shape] == [{"batch": 1, "seq": 3},
                                                   {"batch": 3, "seq": 22},
                                                   {"batch": 4, "seq": 40}]


def scaled_batch_model():
    """x [batch, 16, 2, 4] viewed as [batch * 16, 2, 4] plus a weight expanded to that shape,
    the size computed as the dynamo exporter writes it (Swin-v2, DeBERTa-v2, wav2vec 2.0):
    Reshape(Mul(16, Squeeze(Shape(x)[0:1])), [-1]) -> Concat -> Reshape / Expand."""
    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(1, 2, 4) / 8, "w")
    inits = [w, _const("start", [0]), _const("end", [1]), _const("sixteen", 16),
             _const("flat", [-1]), _const("tail", [2, 4])]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "start", "end"], ["b1"]),
             helper.make_node("Squeeze", ["b1"], ["b"]),
             helper.make_node("Mul", ["sixteen", "b"], ["rows"]),
             helper.make_node("Reshape", ["rows", "flat"], ["rows1"]),
             helper.make_node("Concat", ["rows1", "tail"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["flat_x"]),
             helper.make_node("Expand", ["w", "target"], ["wide"]),
             helper.make_node("Add", ["flat_x", "wide"], ["y"])]
    graph = helper.make_graph(
        nodes, "scaled_batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16, 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 2, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_reshape_of_shape_arithmetic_matches_onnx_runtime():
    """Before: "Reshape expects the input data to be a Tensor. However, the given input is
    ir.PrimType" (TVM keeps the scalar as a PrimValue)."""
    report = anychip.verify(scaled_batch_model(), target="cpu", dims={"batch": (1, 8)})
    assert report.passed, report.summary()


def resized_model():
    """x [batch, 4, h, w] resized (linear) to a fixed 16x16 with sizes Concat(Shape(x)[0:2],
    [16, 16]) (F.interpolate(size=...) under a dynamic batch: Segformer's decode head), and
    to the spatial size of a second input z [batch, 2, H, W] (a decoder's skip)."""
    inits = [_const("start", [0]), _const("two", [2]), _const("four", [4]),
             _const("fixed", [16, 16])]
    nodes = [helper.make_node("Shape", ["x"], ["sx"]),
             helper.make_node("Slice", ["sx", "start", "two"], ["nc"]),
             helper.make_node("Concat", ["nc", "fixed"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear"),
             helper.make_node("Shape", ["z"], ["sz"]),
             helper.make_node("Slice", ["sz", "two", "four"], ["hw"]),
             helper.make_node("Concat", ["nc", "hw"], ["to_z"], axis=0),
             helper.make_node("Resize", ["x", "", "", "to_z"], ["u"], mode="linear")]
    graph = helper.make_graph(
        nodes, "resized",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, "h", "w"]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 2, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 16, 16]),
         helper.make_tensor_value_info("u", TensorProto.FLOAT, ["batch", 4, "H", "W"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_resize_to_sizes_made_from_shapes_matches_onnx_runtime():
    """Before: "'Var' object has no attribute 'value'" in TVM's Resize converter."""
    report = anychip.verify(resized_model(), target="cpu",
                            dims={"batch": (1, 3), "h": (4, 12), "w": (4, 12), "H": (8, 20),
                                  "W": (8, 20)})
    assert report.passed, report.summary()


def expanded_mask_model():
    """A position mask expanded to [batch, 1, k, k] with k = samples / 20 - 1 (truncating
    Div: how wav2vec 2.0's dynamo export computes its frame count), the target built by
    Concat(Shape(x)[0:1], [1], k, k), then added to scores of the same frames."""
    inits = [_const("start", [0]), _const("end", [1]), _const("one", [1]), _const("i1", 1),
             _const("twenty", 20), _const("minus1", 1), _const("zero", 0), _const("step", 1),
             _const("flat", [-1]), _const("ax", [0, 1, 3])]
    nodes = [helper.make_node("Shape", ["x"], ["sx"]),
             helper.make_node("Slice", ["sx", "start", "end"], ["b"]),
             helper.make_node("Gather", ["sx", "i1"], ["n"], axis=0),
             helper.make_node("Div", ["n", "twenty"], ["q"]),
             helper.make_node("Sub", ["q", "minus1"], ["k"]),
             helper.make_node("Reshape", ["k", "flat"], ["kv"]),
             helper.make_node("Concat", ["b", "one", "kv", "kv"], ["target"], axis=0),
             helper.make_node("Range", ["zero", "k", "step"], ["pos"]),
             helper.make_node("Unsqueeze", ["pos", "ax"], ["pos4"]),
             helper.make_node("Expand", ["pos4", "target"], ["mask"]),
             helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["maskf", "scores"], ["y"])]
    graph = helper.make_graph(
        nodes, "expanded_mask",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples"]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1, "k", "k"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, "k", "k"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_expand_to_a_shape_made_from_shapes_keeps_the_symbols():
    """Before: TVM read the target at run time into fresh variables (x_0..x_3); the mask could
    not meet the scores again (wav2vec 2.0, HuBERT: 'emit_te now only supports Tensor that has
    ShapeExpr shape')."""
    source = driver.load_model(expanded_mask_model(), dims={"samples": (60, 400),
                                                            "batch": (1, 3)})
    text = importer.to_relax(source)["main"].script()
    assert "tensor_to_shape" not in text, text
    x = np.zeros((2, 100), np.float32)
    scores = np.ones((2, 1, 4, 4), np.float32)
    art = anychip.compile(expanded_mask_model(), target="cpu",
                          dims={"samples": (60, 400), "batch": (1, 3), "k": (2, 19)})
    np.testing.assert_array_equal(art.run({"x": x, "scores": scores})["y"],
                                  np.broadcast_to(np.arange(4, dtype=np.float32)[:, None],
                                                  (2, 1, 4, 4)) + 1)


def tiled_keys_model():
    """Relative-position keys [4, 6, 8] tiled `batch` times along the heads, repeats
    Concat(Shape(x)[0:1], [1, 1]) (DeBERTa-v2's dynamo export), added to x [batch * 4, 6, 8]
    viewed from q [batch, 4, 6, 8]."""
    keys = numpy_helper.from_array(
        np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8) / 100, "keys")
    inits = [keys, _const("start", [0]), _const("end", [1]), _const("ones", [1, 1]),
             _const("flat", [-1, 6, 8])]
    nodes = [helper.make_node("Shape", ["q"], ["sq"]),
             helper.make_node("Slice", ["sq", "start", "end"], ["b"]),
             helper.make_node("Concat", ["b", "ones"], ["reps"], axis=0),
             helper.make_node("Tile", ["keys", "reps"], ["tiled"]),
             helper.make_node("Reshape", ["q", "flat"], ["qf"]),
             helper.make_node("Add", ["qf", "tiled"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiled", [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["batch", 4, 6, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 6, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_tile_by_repeats_made_from_shapes_keeps_the_symbols():
    """Before: TVM's Tile gave fresh run-time dims (tile_dim_0, ...), and the add with the
    reshaped queries could not be sized ('PrimExpr ... has not been computed')."""
    source = driver.load_model(tiled_keys_model(), dims={"batch": (1, 5)})
    assert "tile_dim" not in importer.to_relax(source)["main"].script()
    report = anychip.verify(tiled_keys_model(), target="cpu", dims={"batch": (1, 5)})
    assert report.passed, report.summary()
