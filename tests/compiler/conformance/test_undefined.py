"""Elements the ONNX spec leaves undefined are not compared (compiler/conformance/undefined.py):
the suite's expected outputs there come from whichever ml_dtypes is installed."""

from __future__ import annotations

import numpy as np
import pytest
from anychip.compiler.conformance.engines import check_outputs
from anychip.compiler.conformance.undefined import out_of_range, undefined_masks
from onnx import TensorProto, helper


def _cast(to: int, op: str = "Cast"):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])]
    if op == "CastLike":
        inputs.append(helper.make_tensor_value_info("like", to, [1]))
        node = helper.make_node("CastLike", ["x", "like"], ["y"])
    else:
        node = helper.make_node("Cast", ["x"], ["y"], to=to)
    graph = helper.make_graph([node], "c", inputs, [helper.make_tensor_value_info("y", to, [6])])
    return helper.make_model(graph)


X = np.array([-9.0, -8.7, 7.9, 8.0, np.nan, np.inf], np.float32)


@pytest.mark.parametrize("op", ["Cast", "CastLike"])
def test_out_of_range_float_to_int4_is_undefined(op):
    masks = undefined_masks(_cast(TensorProto.INT4, op), [X, np.zeros(1)], 1)
    np.testing.assert_array_equal(masks[0], [True, False, False, True, True, True])


def test_int8_and_float_targets():
    np.testing.assert_array_equal(out_of_range(np.array([127.9, 128.0, -128.5, -129.0]),
                                               TensorProto.INT8), [False, True, False, True])
    assert out_of_range(X, TensorProto.FLOAT16) is None
    assert undefined_masks(_cast(TensorProto.FLOAT16), [X], 1) is None
    in_range = np.array([1.0, 2.0, -3.0, 0.0, 0.5, -0.5], np.float32)
    assert undefined_masks(_cast(TensorProto.INT4), [in_range], 1) is None


def test_check_outputs_skips_only_undefined_elements():
    mask = out_of_range(X, TensorProto.INT4)
    expected = np.array([0, -8, 7, 0, 0, 0], np.int8)
    differs_where_undefined = np.array([7, -8, 7, -8, 3, 5], np.int8)
    assert check_outputs([differs_where_undefined], [expected], 1e-3, 1e-7, [mask]) == ""
    assert check_outputs([differs_where_undefined], [expected], 1e-3, 1e-7) != ""
    wrong_where_defined = np.array([0, -7, 7, 0, 0, 0], np.int8)
    assert "1/2 values differ" in check_outputs([wrong_where_defined], [expected], 1e-3, 1e-7,
                                                 [mask])
