"""Operator placement per ONNX node: what runs on the AI Core, what falls back to the host and
why, and that report.json carries it."""

from __future__ import annotations

import pytest

import anychip
from anychip.backends.npu.chip import Chip
from anychip.backends.npu.placement import place_nodes
from anychip.compiler.backend import Mode
from anychip.compiler.registry import get_backend, get_profile
from anychip.compiler.frontend import load_model

from .conftest import matmul_softmax_model, mixed_model


def _placements(model, target, mode="force_fp16"):
    chip = Chip.of(get_profile(target))
    proto = load_model(model).proto
    return {p.name: p for p in place_nodes(proto, chip, mode)}


def test_simulates_and_says_why(npu_target):
    profile = get_profile(npu_target)
    ex = get_backend(profile).execution(profile)
    assert ex.mode is Mode.SIMULATES
    assert "simulator" in ex.why and "onnxruntime-cann is not installed" in ex.why


def test_unsupported_ops_and_dtypes_go_to_the_host_with_reasons(npu_target):
    chip = Chip.of(get_profile(npu_target))
    assert "Trilu" not in chip.ai_core_ops          # the premise: the profile's table lacks it
    places = _placements(mixed_model(), npu_target)
    assert places["embed"].unit == "host"
    assert "int64 input 'ids'" in places["embed"].reason and "cast it to int32" in \
        places["embed"].reason
    assert places["trilu"].unit == "host"
    assert f"not in {npu_target}'s AI Core op table" in places["trilu"].reason
    for name in ("to_f64", "mul_f64", "to_f32"):
        assert places[name].unit == "host" and "float64" in places[name].reason, name
    assert places["matmul"].unit == "cube" and places["matmul"].dtype == "float16"
    assert places["relu"].unit == "vector" and places["relu"].dtype == "float16"
    assert places["shape"].unit == "folded"
    assert places["add"].unit == "vector"


def test_keep_origin_dtype_sends_fp32_matmul_to_host_without_fp32_cube(npu_target):
    chip = Chip.of(get_profile(npu_target))
    places = _placements(matmul_softmax_model(), npu_target, "must_keep_origin_dtype")
    if "float32" in chip.ai_core_ops["MatMul"]:
        assert places["mm"].unit == "cube" and places["mm"].dtype == "float32"
    else:
        assert places["mm"].unit == "host"
        assert "must_keep_origin_dtype keeps float32" in places["mm"].reason
    assert places["softmax"].unit == "vector" and places["softmax"].dtype == "float32"


def test_report_json_lists_every_node_with_placement_and_reason(ids_feed):
    art = anychip.compile(mixed_model(), target="ascend-910b")
    placement = art.report["placement"]
    assert [n["name"] for n in placement["nodes"]] == [n.name for n in mixed_model().graph.node]
    assert placement["counts"] == {"host": 5, "vector": 3, "cube": 1, "folded": 1}
    fallbacks = {f["node"]: f["reason"] for f in placement["host_fallbacks"]}
    assert set(fallbacks) == {"embed", "trilu", "to_f64", "mul_f64", "to_f32"}
    assert all(n["reason"] for n in placement["nodes"])
    # the host parts compute in their own dtypes; the whole model still matches ONNX Runtime
    report = anychip.verify(mixed_model(), target="ascend-910b", inputs=ids_feed)
    assert report.passed and report.how == "simulated", report.summary()


@pytest.mark.parametrize("op_table_has_bf16", [True, False])
def test_bf16_mix_only_on_chips_with_bf16(op_table_has_bf16):
    from anychip.compiler.errors import AnychipError

    target = "ascend-910b" if op_table_has_bf16 else "ascend-910"
    if op_table_has_bf16:
        places = _placements(matmul_softmax_model(), target, "allow_mix_precision_bf16")
        assert places["mm"].dtype == "bfloat16" and places["softmax"].dtype == "float32"
    else:
        with pytest.raises(AnychipError, match="no bfloat16 on this chip"):
            anychip.compile(matmul_softmax_model(), target=target,
                            precision_mode="allow_mix_precision_bf16")
