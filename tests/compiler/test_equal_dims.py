"""compiler/equal_dims.py: input dims named differently per input that the graph broadcasts
together (an attention mask [batch_size, sequence_length] added to the scores of input_ids
[batch, seq]) are compiled as one symbol: the model compiles (it failed: no kernel for an add
of unknown shape), matches ONNX Runtime at every size verify picks, user bounds given for the
merged name apply, and inputs where the dims differ are refused in one line."""

from __future__ import annotations

import subprocess
import sys

import anychip
import numpy as np
import onnx
import pytest
from anychip.compiler.equal_dims import MERGED_DIMS_KEY, merge_input_symbols
from anychip.compiler.errors import AnychipError, InputsRejected
from anychip.compiler.frontend import load_model
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def two_inputs_added() -> onnx.ModelProto:
    return _model([helper.make_node("Add", ["x", "y"], ["z"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 4]),
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
                  [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", 4])])


def masked_attention() -> onnx.ModelProto:
    """Embedding lookup, one attention head, the 0/1 mask turned into a -1e4 bias broadcast
    over the scores: the mask's dims are named apart from the ids'."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((50, 16)).astype(np.float32), "emb"),
             numpy_helper.from_array((rng.standard_normal((16, 16)) / 4).astype(np.float32), "wq"),
             numpy_helper.from_array((rng.standard_normal((16, 16)) / 4).astype(np.float32), "wk"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(-1e4, np.float32), "big"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"]),
             helper.make_node("MatMul", ["e", "wq"], ["q"]),
             helper.make_node("MatMul", ["e", "wk"], ["k"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["one", "m"], ["im"]),
             helper.make_node("Mul", ["im", "big"], ["bias"]),
             helper.make_node("Unsqueeze", ["bias", "axis1"], ["b3"]),
             helper.make_node("Add", ["s", "b3"], ["sb"]),
             helper.make_node("Softmax", ["sb"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "e"], ["out"])]
    return _model(nodes,
                  [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
                   helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                                 ["batch_size", "sequence_length"])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 16])],
                  inits)


def test_symbols_the_graph_broadcasts_together_are_merged_to_the_first_named():
    model = masked_attention()
    assert merge_input_symbols(model) == {"batch_size": "batch", "sequence_length": "seq"}
    dims = {vi.name: [d.dim_param for d in vi.type.tensor_type.shape.dim]
            for vi in model.graph.input}
    assert dims == {"ids": ["batch", "seq"], "attention_mask": ["batch", "seq"]}
    # independent symbols stay apart: two inputs that never meet
    apart = _model([helper.make_node("Relu", ["x"], ["u"]), helper.make_node("Relu", ["y"], ["v"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 4]),
                    helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
                   [helper.make_tensor_value_info("u", TensorProto.FLOAT, ["a", 4]),
                    helper.make_tensor_value_info("v", TensorProto.FLOAT, ["b", 4])])
    assert merge_input_symbols(apart) == {}


def test_masked_attention_with_dims_named_per_input_matches_onnx_runtime():
    report = anychip.verify(masked_attention(), target="cpu",
                            dims={"sequence_length": (2, 40), "batch": (1, 3)})
    assert report.passed, report.summary()
    assert [r.sizes for r in report.by_shape] == [{"batch": 1, "seq": 2},
                                                   {"batch": 2, "seq": 21},
                                                   {"batch": 3, "seq": 40}]


def test_inputs_where_merged_dims_differ_are_refused_in_one_line(tmp_path):
    model = two_inputs_added()
    art = anychip.compile(model, target="cpu")
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(art.run({"x": x, "y": 2 * x})["z"], 3 * x)
    with pytest.raises(AnychipError, match=r"symbol 'a' .* is 3 in input 'x' axis 0 but 5 in "
                                           r"input 'y' axis 0"):
        art.run({"x": x, "y": np.ones((5, 4), np.float32)})
    # the same from the CLI (compile, then run on an .npz): one line, exit 2
    path, out = tmp_path / "add.onnx", tmp_path / "add.anychip"
    onnx.save(model, path)
    np.savez(tmp_path / "in.npz", x=x, y=np.ones((5, 4), np.float32))
    cli = [sys.executable, "-m", "anychip.compiler.cli.main"]
    subprocess.run([*cli, "compile", str(path), "--target", "cpu", "-o", str(out)], check=True,
                   capture_output=True, timeout=300)
    done = subprocess.run([*cli, "run", str(out), "--inputs", str(tmp_path / "in.npz")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "but 5 in input 'y'" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_bounds_of_merged_names_must_overlap():
    source = load_model(two_inputs_added(), dims={"a": (1, 8), "b": (4, 16)})
    assert source.extra[MERGED_DIMS_KEY] == {"b": "a"}
    assert source.extra["dims"] == {"a": (4, 8)}
    with pytest.raises(AnychipError, match="'b' is the same dim as 'a'.*do not overlap"):
        load_model(two_inputs_added(), dims={"a": (1, 3), "b": (4, 16)})


def test_unmerged_symbols_are_checked_by_the_program(monkeypatch):
    """Where ONNX Runtime's tool cannot read the model (simulated: it finds nothing), the
    importer casts y [b, 4] to [a * 1, 4] (a cast to the bare a is dropped by Relax's
    CanonicalizeBindings, and the add lost its shape: 'CodeGenVM cannot emit ... relax.add');
    the program checks it, and inputs where a and b differ fail in one line."""
    from anychip.compiler import equal_dims, frontend

    monkeypatch.setattr(frontend, "merge_input_symbols", lambda model: {})
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    model = two_inputs_added()
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()
    assert equal_dims.MERGED_DIMS_KEY not in load_model(model).extra
    art = anychip.compile(model, target="cpu")
    x = np.ones((3, 4), np.float32)
    with pytest.raises(InputsRejected, match=r"\(x 3x4, y 5x4\): a dim is 5 where the graph "
                                             r"computes 3"):
        art.run({"x": x, "y": np.ones((5, 4), np.float32)})


def _scaled(through_function: bool) -> onnx.ModelProto:
    """x [2, n] times a [2, 2] weight (n can only be 2), directly or inside a local function."""
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(2, 2), "w")
    io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "n"])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [w])
    if not through_function:
        return _model([helper.make_node("Mul", ["x", "w"], ["y"])], *io)
    body = onnx.helper.make_function("local", "Scale", ["p", "q"], ["o"],
                                     [helper.make_node("Mul", ["p", "q"], ["o"])],
                                     [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Scale", ["x", "w"], ["y"], domain="local")],
                              "g", *io)
    return helper.make_model(graph, functions=[body],
                             opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("local", 1)])


@pytest.mark.parametrize("through_function", [False, True])
def test_a_symbol_the_graph_fixes_to_a_size_is_compiled_static(through_function):
    """Before: 'CodeGenVM cannot emit ... relax.multiply' (a product of unknown shape), and
    verify picked n = 33."""
    model = _scaled(through_function)
    assert merge_input_symbols(model) == {"n": 2}
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 2]
    report = anychip.verify(_scaled(through_function), target="cpu")
    assert report.passed, report.summary()
    with pytest.raises(AnychipError, match="the graph fixes 'n' at 2 .* outside the bounds 3..8"):
        load_model(_scaled(through_function), dims={"n": (3, 8)})
    assert load_model(_scaled(through_function), dims={"n": (1, 8)}).extra.get("dims", {}) == {}
