"""gpu/cuda families: kernels compile once with symbolic extents, the profile's limits are
checked at the symbols' upper bounds; CumSum (TVM's GPU scan, whose launch extent TVM's own
verifier cannot analyse) compiles instead of failing a valid model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.compiler.registry import get_backend, get_profile

from ...compiler.test_dynamic_shapes import conv_batch_model


def _compiles_here(target: str) -> bool:
    profile = get_profile(target)
    return get_backend(profile).execution(profile).mode.value != "unavailable"


TARGETS = [t for t in ("biren-br104", "nvidia-h100") if _compiles_here(t)]


def cumsum_model() -> onnx.ModelProto:
    axis = numpy_helper.from_array(np.array(1, np.int64), "axis")
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["c"]),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "cumsum",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])],
                              [axis])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("target", [pytest.param(t, marks=pytest.mark.slow) if t == "biren-br104"
                                    else t for t in TARGETS])
def test_symbolic_batch_compiles_once_with_limits_checked_at_the_upper_bound(target):
    art = anychip.compile(conv_batch_model(), target=target, dims={"batch": (1, 8)})
    assert art.manifest["symbols"] == {"batch": {"min": 1, "max": 8}}
    assert art.report["limits_checked_at_upper_bounds"] == {"batch": 8}
    assert art.report["kernels"] > 0


@pytest.mark.parametrize("target", TARGETS[:1])
def test_cumsum_compiles_and_the_unverifiable_scan_kernel_is_reported(target):
    art = anychip.compile(cumsum_model(), target=target)
    skipped = art.report.get("kernels_not_limit_checked") or {}
    assert skipped, art.report
    assert all("cannot analyse" in why for why in skipped.values())
