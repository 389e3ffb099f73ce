"""compiler/dim_labels.py: input dim labels that are not expressions over the inputs' symbols
('a:b', '0', '$(id)', a 5000-character name, 'past + 1' with no 'past' dim) are opaque names,
as for ONNX Runtime: the model compiles and matches ONNX Runtime (before, the compile failed
with the label alone as its message), `dims=` accepts the label as written, and a cached
artifact of the model loads again (a long label failed the manifest's schema)."""

from __future__ import annotations

import warnings

import anychip
import numpy as np
import onnx
import pytest
from anychip.compiler.dim_labels import RENAMED_DIMS_KEY, rename_opaque_labels
from anychip.compiler.frontend import load_model
from onnx import TensorProto, helper, numpy_helper


def _model(label: str) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [label, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [label, 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("label", ["a:b", "0", "$(id)", "sequence length", "past + 1",
                                   "a/b", "\u202e", "x" * 5000])
def test_an_opaque_label_compiles_as_a_symbol_and_matches_onnx_runtime(label):
    source = load_model(_model(label), dims={label: (2, 5)})
    new = source.extra[RENAMED_DIMS_KEY][label]
    assert new.isidentifier() and len(new) <= 64
    assert source.inputs[0].shape == (new, 4)
    assert source.extra["dims"] == {new: (2, 5)}
    report = anychip.verify(_model(label), target="cpu", dims={label: (2, 5)})
    assert report.passed, report.summary()
    sizes = [r.sizes[new] for r in report.by_shape]
    assert sizes[0] == 2 and sizes[-1] == 5 and len(sizes) == 3


def test_expressions_over_bound_symbols_and_plain_names_stay():
    model = _model("n")
    twice = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["2*n"])
    model.graph.input.append(twice)
    assert rename_opaque_labels(model) == {}
    # the same label where no input binds 'n' alone is a name of its own
    assert rename_opaque_labels(_model("2*n")) == {"2*n": "t_2_n"}


def test_renamed_labels_are_unique_among_the_inputs_symbols():
    model = _model("a:b")
    model.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a_b"]))
    assert rename_opaque_labels(model) == {"a:b": "a_b_1"}
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "a_b_1"


def test_a_cached_artifact_with_a_long_label_loads_without_quarantine(tmp_path, monkeypatch):
    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ANYCHIP_NO_CACHE", raising=False)
    anychip.compile(_model("x" * 5000), target="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a quarantined entry warns (CacheWarning)
        art = anychip.compile(_model("x" * 5000), target="cpu")
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(art.run({"x": x})["y"],
                               np.maximum(x @ (np.arange(12).reshape(4, 3) / 10), 0), rtol=1e-5)
