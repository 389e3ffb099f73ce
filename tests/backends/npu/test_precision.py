"""Precision modes change dtypes as CANN's ATC does, and the simulated numerics follow."""

from __future__ import annotations

import numpy as np
import pytest

import anychip
from anychip.backends.npu.chip import Chip
from anychip.backends.npu.placement import place_nodes
from anychip.backends.npu.precision import simulated_model
from anychip.compiler.frontend import load_model
from anychip.compiler.registry import get_profile

from .conftest import matmul_softmax_model

# (mode) -> dtype of (matmul, relu, mul, softmax), as ATC's rules give them for float32 graphs
EXPECTED = {
    "force_fp16": ("float16", "float16", "float16", "float16"),
    "allow_fp32_to_fp16": ("float16", "float32", "float32", "float32"),
    "allow_mix_precision": ("float16", "float16", "float16", "float32"),  # white, grey, grey, black
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_mode_sets_node_dtypes(mode, npu_target):
    chip = Chip.of(get_profile(npu_target))
    proto = load_model(matmul_softmax_model()).proto
    dtypes = tuple(p.dtype for p in place_nodes(proto, chip, mode))
    assert dtypes == EXPECTED[mode]


def test_simulated_graph_casts_only_at_dtype_boundaries():
    chip = Chip.of(get_profile("ascend-910b"))
    proto = load_model(matmul_softmax_model()).proto
    places = place_nodes(proto, chip, "allow_fp32_to_fp16")
    sim = simulated_model(proto, places)
    casts = [n for n in sim.graph.node if n.op_type == "Cast"]
    # x -> fp16 into the cube, the cube's fp16 result -> fp32 for the vector ops
    assert len(casts) == 2
    weights = {i.name: i.data_type for i in sim.graph.initializer}
    assert weights["W__float16"] == 10          # converted at compile time, not cast at run time
    assert [o.name for o in sim.graph.output] == ["y"]


def test_weights_no_node_reads_leave_the_simulated_graph():
    """Under force_fp16 the MatMul reads W__float16 only: the float32 W is not in the graph
    TVM imports (it would be converted and never used); kept where a node still reads it, and
    where only a subgraph does. The input model keeps its weights."""
    from onnx import TensorProto, helper, numpy_helper

    chip = Chip.of(get_profile("ascend-910b"))
    proto = load_model(matmul_softmax_model()).proto
    sim = simulated_model(proto, place_nodes(proto, chip, "force_fp16"))
    names = {i.name for i in sim.graph.initializer}
    assert "W__float16" in names and "W" not in names
    keep = simulated_model(proto, place_nodes(proto, chip, "must_keep_origin_dtype"))
    assert "W" in {i.name for i in keep.graph.initializer}
    assert "W" in {i.name for i in proto.graph.initializer}

    k = numpy_helper.from_array(np.arange(4, dtype=np.float32), "K")
    flag = numpy_helper.from_array(np.array(True), "flag")
    branch = helper.make_graph([helper.make_node("Add", ["x", "K"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 4])])
    other = helper.make_graph([helper.make_node("Sub", ["x", "K"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 4])])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)], "if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [k, flag])
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    sim = simulated_model(model.proto, place_nodes(model.proto, chip, "force_fp16"))
    assert {"K", "flag"} <= {i.name for i in sim.graph.initializer}


def _errors(report) -> tuple[float, float]:
    return report.max_abs, report.max_rel


def test_force_fp16_shows_fp16_error_and_keep_origin_matches_fp32(npu_target):
    model = matmul_softmax_model()
    fp16 = anychip.verify(model, target=npu_target)                 # inference default
    keep = anychip.verify(model, target=npu_target, precision_mode="must_keep_origin_dtype")
    assert fp16.precision == "fp16" and keep.precision == "fp32"
    assert fp16.passed and keep.passed, (fp16.summary(), keep.summary())
    # fp16's unit roundoff is 4.9e-4: the error is at that level, not at fp32's
    assert 1e-5 < fp16.max_abs < 1e-2
    assert keep.max_abs < 1e-5
    assert fp16.outputs[0].rtol == 1e-2 and keep.outputs[0].rtol == 1e-4


def test_precision_maps_onto_atc_modes():
    art = anychip.compile(matmul_softmax_model(), target="ascend-910b", precision="fp32")
    assert art.report["precision_mode"] == "must_keep_origin_dtype" and art.precision == "fp32"
    art = anychip.compile(matmul_softmax_model(), target="ascend-910b", precision="mixed")
    assert art.report["precision_mode"] == "allow_mix_precision" and art.precision == "mixed"
    art = anychip.compile(matmul_softmax_model(), target="ascend-910b", precision="bf16")
    assert art.precision == "bf16"
    report = anychip.verify(matmul_softmax_model(), target="ascend-910b", precision="bf16")
    assert report.passed, report.summary()
    assert report.max_abs > np.finfo(np.float16).eps / 4  # bf16 error is coarser than fp32's


def test_unknown_precision_mode_is_one_clear_error():
    from anychip.compiler.errors import AnychipError

    with pytest.raises(AnychipError, match="use one of force_fp16"):
        anychip.compile(matmul_softmax_model(), target="ascend-310p", precision_mode="fp8_magic")


@pytest.mark.parametrize("op", ["Acos", "Asin", "Atan"])
def test_fp16_math_without_a_tvm_fp16_lowering_compiles_and_verifies(op):
    """TVM's LLVM codegen has no float16 acos/asin/atan ("unknown intrinsic"): under force_fp16
    they compute in float32 and round once, and verify at the fp16 tolerance. (Cosh/Sinh are
    widened too, but a vectorized cosh has no LLVM lowering in any dtype: a known gap.)"""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"])], f"{op.lower()}_fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (4, 32)).astype(np.float32)
    art = anychip.compile(model, target="ascend-910b")
    assert art.manifest["precision"] == "fp16"
    y = art.run({"x": x})["y"]
    reference = {"Acos": np.arccos, "Asin": np.arcsin, "Atan": np.arctan}[op](x)
    np.testing.assert_allclose(y, reference, rtol=1e-2, atol=1e-2)
    assert np.abs(y - reference).max() > 0      # float16 rounding is visible: not an fp32 run
