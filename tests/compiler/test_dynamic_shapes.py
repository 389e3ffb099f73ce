"""Symbolic dims: one cpu artifact for every size within the bounds, checked against ONNX
Runtime at each size; the manifest records the bounds; run() refuses sizes outside them."""

from __future__ import annotations

import anychip
import numpy as np
import onnx
import pytest
from anychip.compiler.errors import AnychipError
from anychip.compiler.frontend import load_model
from anychip.compiler.inputs import random_inputs
from anychip.compiler.reference import run_onnxruntime
from anychip.compiler.tolerances import compare, tolerance_for
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def conv_batch_model() -> onnx.ModelProto:
    """Conv + Relu + GlobalAveragePool + Flatten + Gemm with a dynamic batch."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) / 6).astype(np.float32), "w")
    fc = numpy_helper.from_array((rng.standard_normal((5, 8)) / 3).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], [w, fc])


def sequence_model() -> onnx.ModelProto:
    """What exported transformers do with a dynamic sequence: positions from
    Range(0, Squeeze(Shape(x, 1, 2))) as torch.export writes it, a Reshape to a shape built by Shape/Gather/Concat, a Transpose, an
    Expand of a constant to the symbolic shape, softmax over the sequence."""
    rng = np.random.default_rng(1)
    table = numpy_helper.from_array(rng.standard_normal((64, 8)).astype(np.float32), "pos")
    ints = {"zero": 0, "one": 1}
    inits = [table] + [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()]
    inits += [numpy_helper.from_array(np.array([1], np.int64), "idx1"),
              numpy_helper.from_array(np.array([2], np.int64), "two"),
              numpy_helper.from_array(np.array([2, 4], np.int64), "heads"),
              numpy_helper.from_array(np.array([2, 1, 1], np.int64), "exp_shape"),
              numpy_helper.from_array(np.ones((1, 1, 1), np.float32), "ones")]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Shape", ["x"], ["s1"], start=1, end=2),
        helper.make_node("Squeeze", ["s1"], ["n"]),
        helper.make_node("Range", ["zero", "n", "one"], ["positions"]),
        helper.make_node("Gather", ["pos", "positions"], ["pe"], axis=0),
        helper.make_node("Add", ["x", "pe"], ["h"]),
        helper.make_node("Gather", ["s", "idx1"], ["n1"], axis=0),
        helper.make_node("Concat", ["two", "n1", "heads"], ["target"], axis=0),
        helper.make_node("Reshape", ["h", "target"], ["h4"]),
        helper.make_node("Transpose", ["h4"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Expand", ["ones", "exp_shape"], ["scale"]),
        helper.make_node("ReduceSum", ["t", "heads_axis"], ["summed"], keepdims=0),
        helper.make_node("Mul", ["summed", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["y"], axis=-1),
    ]
    inits.append(numpy_helper.from_array(np.array([3], np.int64), "heads_axis"))
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "seq", 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, "seq"])], inits)
    # torch.onnx.export states intermediate symbolic shapes; ONNX's inference alone cannot
    # give Range's length ('unk__0')
    model.graph.value_info.append(
        helper.make_tensor_value_info("positions", TensorProto.INT64, ["seq"]))
    return model


def _check_at(art, model, sizes):
    feed = random_inputs(art.inputs, 0, sizes)
    got = art.run(feed)
    expected = run_onnxruntime(load_model(model).original, feed, "ref")
    for spec, exp in zip(art.outputs, expected):
        assert got[spec.name].shape == exp.shape
        result = compare(got[spec.name], exp, tolerance_for(art.precision, exp.dtype))
        assert result.passed, (sizes, result.max_abs)


def test_one_cpu_artifact_serves_every_batch_size_within_its_bounds():
    model = conv_batch_model()
    art = anychip.compile(model, target="cpu", dims={"batch": (1, 8)})
    assert art.manifest["symbols"] == {"batch": {"min": 1, "max": 8}}
    assert art.inputs[0].shape == ("batch", 4, 8, 8)
    # the oneDNN library calls stay with a symbolic batch (conv+relu, the dense layer)
    assert art.report["dispatch"]["total"] == 2
    for batch in (1, 3, 8):
        _check_at(art, model, {"batch": batch})


def test_shape_chains_range_expand_and_transpose_keep_the_sequence_symbol():
    """Without importer_fixes/symbolic.py TVM's import of this graph loses 'seq' (Range's
    fresh length variable, Expand reading symbolic dims as ints) and the build fails."""
    model = sequence_model()
    art = anychip.compile(model, target="cpu", dims={"seq": (2, 64)})
    assert art.manifest["symbols"] == {"seq": {"min": 2, "max": 64}}
    for seq in (2, 33, 64):
        _check_at(art, model, {"seq": seq})


def test_an_unbounded_symbol_gets_the_documented_default_range():
    from anychip.compiler.importer_fixes.symbolic import DEFAULT_RANGE, DEFAULT_SEQUENCE_RANGE

    art = anychip.compile(conv_batch_model(), target="cpu")
    assert art.symbols == {"batch": DEFAULT_RANGE}
    seq = anychip.compile(sequence_model(), target="cpu")
    assert seq.symbols == {"seq": DEFAULT_SEQUENCE_RANGE}


def test_run_refuses_a_size_outside_the_bounds_naming_symbol_bounds_and_input():
    art = anychip.compile(conv_batch_model(), target="cpu", dims={"batch": (1, 8)})
    x = np.zeros((9, 4, 8, 8), np.float32)
    with pytest.raises(AnychipError, match=r"symbol 'batch' is 9 in input 'x' axis 0, outside "
                                           r"its bounds 1\.\.8"):
        art.run({"x": x})


def test_two_inputs_disagreeing_on_one_symbol_is_one_error_naming_both():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w])
    art = anychip.compile(model, target="cpu", dims={"n": (1, 16)})
    with pytest.raises(AnychipError, match=r"symbol 'n' \(bounds 1\.\.16\) is 2 in input 'a' "
                                           r"axis 0 but 5 in input 'b' axis 0"):
        art.run({"a": np.zeros((2, 4), np.float32), "b": np.zeros((5, 3), np.float32)})
    out = art.run({"a": np.ones((5, 4), np.float32), "b": np.zeros((5, 3), np.float32)})
    np.testing.assert_allclose(out["y"], np.ones((5, 4), np.float32) @ w_array(w), rtol=1e-5)


def w_array(init):
    return numpy_helper.to_array(init)


def test_dims_naming_an_unknown_symbol_is_one_line():
    with pytest.raises(AnychipError, match="--dim names 'sequence'.*symbolic dims are batch"):
        anychip.compile(conv_batch_model(), target="cpu", dims={"sequence": (1, 4)})


def test_cli_run_out_of_bounds_is_exit_2_with_one_line(tmp_path, capsys):
    from anychip.compiler.cli.main import main

    art = anychip.compile(conv_batch_model(), target="cpu", dims={"batch": (1, 4)})
    saved = tmp_path / "m.anychip"
    art.save(saved)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((6, 4, 8, 8), np.float32))
    assert main(["run", str(saved), "--inputs", str(bad), "-o", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbol 'batch' is 6" in err[0] and "1..4" in err[0]
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((3, 4, 8, 8), np.float32))
    assert main(["run", str(saved), "--inputs", str(good), "-o", str(tmp_path / "o.npz")]) == 0
    with np.load(tmp_path / "o.npz") as out:
        assert out["y"].shape == (3, 5)


def test_a_failure_inside_tvm_is_an_internal_error_exit_1_not_bad_input():
    """A checked model that TVM fails on (its Resize lowering lacks half_pixel_symmetric) is
    not the user's bad input (exit 2): an internal compiler error, exit 1."""
    from anychip.compiler.errors import InternalCompilerError

    scales = numpy_helper.from_array(np.array([1, 1, 0.6, 0.6], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                            coordinate_transformation_mode="half_pixel_symmetric")
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])],
                   [scales], opset=19)
    with pytest.raises(InternalCompilerError, match="compilation failed") as info:
        anychip.compile(model, target="cpu")
    assert info.value.exit_code == 1


def _recurrent(op: str, seq) -> onnx.ModelProto:
    """A bidirectional `op` (LSTM or GRU, hidden 3) over x [seq, batch, 2], batch symbolic."""
    rng = np.random.default_rng(1)
    gates, hidden = {"LSTM": 4, "GRU": 3}[op], 3
    w = numpy_helper.from_array(rng.standard_normal((2, gates * hidden, 2)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((2, gates * hidden, hidden))
                                .astype(np.float32), "R")
    node = helper.make_node(op, ["x", "W", "R"], ["y", "y_h"], hidden_size=hidden,
                            direction="bidirectional")
    graph = helper.make_graph(
        [node], "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, "batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [seq, 2, "batch", hidden]),
         helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [2, "batch", hidden])], [w, r])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_a_recurrent_layer_under_a_symbolic_batch_is_unrolled_and_matches_ort(op):
    """Before: refused as an op TVM does not support (the unrolling needed every dim static,
    and a recurrent layer exported with a dynamic batch is the common case)."""
    report = anychip.verify(_recurrent(op, 5), target="cpu", dims={"batch": (1, 6)})
    assert report.passed, report.summary()
    assert [r.sizes for r in report.by_shape] == [{"batch": 1}, {"batch": 4}, {"batch": 6}]


def test_a_recurrent_layer_over_a_symbolic_sequence_says_what_to_give():
    with pytest.raises(AnychipError, match=r"LSTM \(node .*\): anychip unrolls recurrent layers "
                                           r"over a static sequence length only.*--shape"):
        anychip.compile(_recurrent("LSTM", "seq"), target="cpu")
