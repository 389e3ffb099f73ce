"""compiler/inputs.py: the static fast path of ordering a run's inputs takes exactly the
feeds the general path would accept unchanged, and hands everything else to it (which binds
symbols, converts and explains)."""

from __future__ import annotations

import numpy as np
import pytest

from anychip.compiler.errors import AnychipError
from anychip.compiler.inputs import order_inputs, order_static, static_signature
from anychip.compiler.tensor_spec import TensorSpec

SPECS = [TensorSpec("x", "x", (2, 3), "float32"), TensorSpec("ids", "ids", (2,), "int64")]


def _feed():
    return {"ids": np.arange(2, dtype=np.int64), "x": np.ones((2, 3), np.float32)}


def test_a_matching_feed_is_ordered_by_the_fast_path_as_by_the_general_one():
    signature = static_signature(SPECS)
    fast = order_static(signature, _feed())
    general = order_inputs(SPECS, _feed(), "model")
    assert [a.tolist() for a in fast] == [a.tolist() for a in general]
    assert [a.dtype for a in fast] == [np.float32, np.int64]


@pytest.mark.parametrize("change", ["dtype", "shape", "extra", "missing", "strided", "list",
                                    "python_list"])
def test_anything_else_goes_to_the_general_path(change):
    feed = _feed()
    if change == "dtype":
        feed["x"] = feed["x"].astype(np.float64)
    elif change == "shape":
        feed["x"] = np.ones((3, 2), np.float32)
    elif change == "extra":
        feed["y"] = np.ones(1, np.float32)
    elif change == "missing":
        del feed["ids"]
    elif change == "strided":
        feed["x"] = np.ones((3, 2), np.float32).T
    elif change == "list":
        feed = [feed["x"], feed["ids"]]
    else:
        feed["x"] = feed["x"].tolist()
    assert order_static(static_signature(SPECS), feed) is None
    if change in ("dtype", "shape", "extra", "missing", "python_list"):   # float64 from a list
        with pytest.raises(AnychipError, match="input"):
            order_inputs(SPECS, feed, "model")
    else:   # the general path accepts these: positional inputs, a strided view (copied)
        assert order_inputs(SPECS, feed, "model")[0].flags.c_contiguous


def test_symbolic_inputs_have_no_static_signature():
    assert static_signature([TensorSpec("x", "x", ("batch", 3), "float32")]) is None
