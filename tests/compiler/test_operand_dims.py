"""importer_fixes/operand_dims.py: an op's operands must agree on the dims it contracts or
normalizes over. Where the input's dim is symbolic and the weight's a size, the compiled
program checks it at every call: before, a Conv over `[1, c, 5, 5]` with a 2-channel weight
called with c = 7 read past the weight's buffer and returned numbers (ONNX Runtime refuses).
Each case is compiled with the load-time merge off (compiler/equal_dims.py would otherwise
make the dim static), so the importer's check is what is tested."""

from __future__ import annotations

import anychip
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from anychip.compiler.errors import InputsRejected
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def _weight(name, *shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


# op: (node, input dims with symbol 'c', initializers, the valid c, an invalid c)
CASES = {
    "Conv": (helper.make_node("Conv", ["x", "w"], ["y"], group=2),
             [1, "c", 5, 5], [_weight("w", 4, 2, 3, 3)], 4, 7),
    "ConvTranspose": (helper.make_node("ConvTranspose", ["x", "w"], ["y"]),
                      [1, "c", 4, 4], [_weight("w", 3, 2, 2, 2)], 3, 8),
    "MatMul": (helper.make_node("MatMul", ["x", "w"], ["y"]),
               [2, "c"], [_weight("w", 6, 3)], 6, 40),
    "Gemm": (helper.make_node("Gemm", ["x", "w"], ["y"], transB=1),
             [2, "c"], [_weight("w", 3, 6)], 6, 40),
    "BatchNormalization": (
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
        [1, "c", 3, 3],
        [_weight("s", 4), _weight("b", 4), _weight("m", 4),
         numpy_helper.from_array(np.full(4, 2.0, np.float32), "v")], 4, 9),
    "InstanceNormalization": (
        helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"]),
        [1, "c", 3, 3], [_weight("s", 4), _weight("b", 4)], 4, 9),
    "Reshape": (helper.make_node("Reshape", ["x", "shape"], ["y"]),
                [2, "c"], [numpy_helper.from_array(np.array([4, 3], np.int64), "shape")], 6, 9),
    "LayerNormalization": (
        helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1),
        [3, "c"], [_weight("s", 8), _weight("b", 8)], 8, 20),
}


def _model(op: str) -> onnx.ModelProto:
    node, dims, inits, _, _ = CASES[op]
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             [f"o{i}" for i in range(len(dims))])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", sorted(CASES))
def test_a_symbolic_dim_the_weight_fixes_is_checked_at_every_call(op, monkeypatch):
    from anychip.compiler import frontend

    monkeypatch.setattr(frontend, "merge_input_symbols", lambda model: {})
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    model = _model(op)
    dims, good, bad = CASES[op][1], CASES[op][3], CASES[op][4]
    art = anychip.compile(model, target="cpu", dims={"c": (1, 64)})
    x = RNG.standard_normal([good if d == "c" else d for d in dims]).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(art.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)
    wrong = RNG.standard_normal([bad if d == "c" else d for d in dims]).astype(np.float32)
    with pytest.raises(InputsRejected, match=f"a dim is {bad} where the graph computes {good}"):
        art.run({"x": wrong})


def test_a_reshape_of_two_symbolic_dims_short_of_elements_is_refused_in_one_line(monkeypatch):
    """[a, b] to a constant [4, 4]: which of a, b is short is not known, so no cast; the VM's
    view check refuses a product under 16 (a ValueError, an internal error before)."""
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    shape = numpy_helper.from_array(np.array([4, 4], np.int64), "shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "r",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
                              [shape])
    art = anychip.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                          target="cpu")
    x = np.arange(16, dtype=np.float32)
    np.testing.assert_array_equal(art.run({"x": x.reshape(2, 8)})["y"], x.reshape(4, 4))
    with pytest.raises(InputsRejected, match=r"\(x 3x2\): a Reshape asks for more elements"):
        art.run({"x": np.ones((3, 2), np.float32)})
