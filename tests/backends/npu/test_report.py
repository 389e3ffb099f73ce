"""report.json: cube kernels, cost model, buffer and memory use; the files ATC needs; and the
`anychip analyze` porting report built from them."""

from __future__ import annotations

import json
import math

import onnx

import anychip
from anychip.backends.npu.chip import Chip
from anychip.compiler.cli.main import main
from anychip.compiler.registry import get_profile

from .conftest import matmul_softmax_model, mixed_model


def test_cost_model_counts_fractals_and_bytes(npu_target):
    art = anychip.compile(matmul_softmax_model(32, 64, 48), target=npu_target)
    estimate = art.report["estimate"]
    chip = Chip.of(get_profile(npu_target))
    mm = next(k for k in estimate["kernels"] if k["node"] == "mm")
    assert mm["unit"] == "cube" and mm["cube_fractals"] == 2 * 3 * 4   # 32/16, 48/16, 64/16
    assert mm["flops"] == 2 * 32 * 48 * 64
    assert mm["bytes"]["GM"] >= (32 * 64 + 64 * 48 + 32 * 48) * 2      # fp16 operands
    cycles = mm["cube_fractals"] / (chip.fractals_per_cycle("float16") * min(mm["blocks"],
                                                                            chip.ai_cores))
    assert math.isclose(mm["compute_us"], cycles / (chip.clock_ghz * 1e3), abs_tol=1e-3)
    total = estimate["total"]
    assert total["time_us"] == round(sum(k["time_us"] for k in estimate["kernels"]), 3)
    assert estimate["roofline"]["bound"] in ("compute", "memory")
    assert 0 < estimate["roofline"]["bound_time_us"] <= total["time_us"]
    for level, use in estimate["buffers"].items():
        assert use["peak_bytes"] <= use["capacity_bytes"] == chip.buffers[level]
    kernels = art.report["cube_kernels"]
    assert len(kernels) == 1
    (kernel,) = kernels.values()
    assert kernel["tir_buffer_bytes"] == kernel["buffer_bytes"]


def test_requested_tile_is_retiled_in_the_report():
    art = anychip.compile(matmul_softmax_model(256, 512, 256), target="ascend-910b",
                          cube_tile=[256, 256, 512, 128])
    (kernel,) = art.report["cube_kernels"].values()
    assert "re-tiled" in kernel["notes"][0]
    assert kernel["tir_buffer_bytes"]["L0C"] <= 131072


def test_atc_files_and_command(npu_target, tmp_path):
    art = anychip.compile(mixed_model(), target=npu_target)
    files = {p.name for p in art.device_files()}
    assert files == {"model.onnx", "atc.sh", "tiling_plan.json"}
    atc = art.report["atc"]
    chip = Chip.of(get_profile(npu_target))
    assert f"--soc_version={chip.raw['soc_version']}" in atc["command"]
    assert "--precision_mode=force_fp16" in atc["command"]
    assert "'--input_shape=ids:8;x:8,16'" in atc["command"]
    legal = onnx.load(str(art.path / "device" / "model.onnx"))
    onnx.checker.check_model(legal)
    ids = next(i for i in legal.graph.input if i.name == "ids")
    assert ids.type.tensor_type.elem_type == onnx.TensorProto.INT32     # narrowed: Gather index
    assert atc["narrowed_inputs"] == ["ids"]
    assert atc["runs_on_device_here"] is False
    plan = json.loads((art.path / "device" / "tiling_plan.json").read_text())
    assert plan["kernels"] == art.report["cube_kernels"]


def test_analyze_prints_the_porting_report(tmp_path, capsys):
    path = tmp_path / "mixed.onnx"
    onnx.save(mixed_model(), str(path))
    assert main(["analyze", str(path), "--target", "ascend-910b"]) == 0
    out = capsys.readouterr().out
    for heading in ("Placement (ONNX nodes)", "Host (AI CPU) fallbacks", "Dtype changes",
                    "On-chip buffers", "Device memory", "Estimated time", "atc --model"):
        assert heading in out, heading
    assert "trilu" in out and "int64 input 'ids'" in out
    assert main(["analyze", str(path), "--target", "ascend-310p", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["placement"]["counts"]["host"] == 5
    assert data["estimate"]["total"]["time_us"] > 0


def test_analyze_reports_a_bad_precision_mode_in_one_line(tmp_path, capsys):
    path = tmp_path / "mm.onnx"
    onnx.save(matmul_softmax_model(), str(path))
    code = main(["analyze", str(path), "--target", "ascend-910", "--precision-mode",
                 "allow_mix_precision_bf16"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bfloat16" in err
