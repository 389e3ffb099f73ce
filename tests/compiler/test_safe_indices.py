"""Index operators fed indices at run time: in range (negatives included) they match ONNX
Runtime; out of range they never touch memory outside their tensors (each of these four
segfaulted the process before compiler/safe_indices.py): a gather gives NaN there, a scatter
drops that update. Static shapes, and symbolic ones (a dynamic model: the bounds come from the
data's shape at run time; a GatherElements 10^7 past a symbolic axis segfaulted until
2026-12-06)."""

from __future__ import annotations

import anychip
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper

FAR = 10**7   # an index this far past the end read or wrote unmapped memory


def _model(op: str, index_shape: list[int], out_shape: list[int], symbolic: bool = False,
           **attrs):
    """`symbolic`: the data's rows are `n` and the indices' first dim `k` (their last dim, a
    GatherND/ScatterND index depth, stays static)."""
    def dims(shape, rows):
        return ([{4: "n", 2: "k"}.get(shape[0], shape[0])] + shape[1:]) if symbolic and rows \
            else shape
    names = ["x", "i"] + (["u"] if op.startswith("Scatter") else [])
    inputs = [helper.make_tensor_value_info("x", T.FLOAT, dims([4, 3], True)),
              helper.make_tensor_value_info("i", T.INT64, dims(index_shape, True))]
    if op.startswith("Scatter"):
        upd = index_shape[:-1] + [3] if op == "ScatterND" else index_shape
        inputs.append(helper.make_tensor_value_info("u", T.FLOAT, dims(upd, True)))
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", T.FLOAT, dims(out_shape, True))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


X = np.arange(12, dtype=np.float32).reshape(4, 3)
CASES = {
    # op: (model arguments, in-range indices with a negative one, out-of-range position)
    "GatherElements": (("GatherElements", [2, 3], [2, 3], {"axis": 0}),
                       np.array([[0, -1, 2], [3, 1, -4]], np.int64), (0, 1)),
    "GatherND": (("GatherND", [2, 2], [2], {}), np.array([[0, -1], [3, 1]], np.int64), (1,)),
    "ScatterElements": (("ScatterElements", [2, 3], [4, 3], {"axis": 0}),
                        np.array([[0, -1, 2], [3, 1, -3]], np.int64), (0, 1)),
    "ScatterND": (("ScatterND", [2, 1], [4, 3], {}), np.array([[1], [-1]], np.int64), (1,)),
}


@pytest.mark.parametrize("symbolic", [False, True], ids=["static", "symbolic"])
@pytest.mark.parametrize("op", sorted(CASES))
def test_runtime_indices_match_ort_in_range_and_stay_in_bounds_outside(op, symbolic):
    (name, index_shape, out_shape, attrs), good, bad_at = CASES[op]
    model = _model(name, index_shape, out_shape, symbolic, **attrs)
    feed = {"x": X, "i": good}
    if op.startswith("Scatter"):
        feed["u"] = np.full(good.shape[:-1] + (3,) if op == "ScatterND" else good.shape,
                            -7.0, np.float32)
    art = anychip.compile(model, target="cpu")
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_array_equal(art.run(feed)["y"], ref)

    bad = good.copy()
    bad[bad_at] = FAR
    got = art.run({**feed, "i": bad})["y"]
    if op.startswith("Gather"):
        row = bad_at[0]
        assert np.isnan(got[row]).all() if op == "GatherND" else np.isnan(got[bad_at])
        keep = np.ones(got.shape, bool)
        keep[row if op == "GatherND" else bad_at] = False
        np.testing.assert_array_equal(got[keep], ref[keep])
    else:
        # the same scatter without the dropped update: ORT on the remaining ones
        kept = np.delete(np.arange(good.shape[0]), bad_at[0]) if op == "ScatterND" else None
        if op == "ScatterND":
            expect = ort.InferenceSession(
                _model(op, [len(kept), 1], [4, 3]).SerializeToString(),
                providers=["CPUExecutionProvider"]).run(
                    None, {"x": X, "i": good[kept], "u": feed["u"][kept]})[0]
        else:
            expect = ref.copy()
            expect[good[bad_at] % 4, bad_at[1]] = X[good[bad_at] % 4, bad_at[1]]
        np.testing.assert_array_equal(got, expect)
