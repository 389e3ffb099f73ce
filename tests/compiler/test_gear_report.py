"""npu gear artifacts: report.json and `anychip analyze` list each gear with its buffer check
(on-chip buffers and device memory at the gear's static shape), the cost model's estimate,
compile time and size; a saved gear artifact loads again (each gear's manifest checked)."""

from __future__ import annotations

import json

import onnx
import pytest

from anychip.backends.npu.report_text import gear_summary, sections
from anychip.compiler.cli.main import main
from tests.compiler.test_dynamic_shapes import conv_batch_model

FIELDS = {"sizes", "path", "compile_s", "size_bytes", "buffer_check", "estimate"}


def _gear_report(use: float) -> dict:
    """A static program's report as the npu backend writes it (only what the gear line reads)."""
    return {"estimate": {
        "buffers": {"L0A": {"peak_bytes": 10, "capacity_bytes": 64, "use": 0.16},
                    "UB": {"peak_bytes": 50, "capacity_bytes": 64, "use": 0.78}},
        "memory": {"weights_bytes": 100, "peak_activation_bytes": 200, "device_bytes": 1000,
                   "use": use},
        "total": {"time_us": 12.5, "cube_us": 10.0, "vector_us": 2.5, "host_us": 0.0,
                  "kernels": 3},
        "roofline": {"bound": "memory", "bound_time_us": 1.0}}}


def test_gear_summary_checks_buffers_and_device_memory():
    ok = gear_summary(_gear_report(0.3))
    assert ok["buffer_check"]["passed"] and ok["buffer_check"]["worst_buffer"] == "UB"
    assert ok["estimate"]["time_us"] == 12.5 and ok["estimate"]["bound"] == "memory"
    assert not gear_summary(_gear_report(1.2))["buffer_check"]["passed"]   # over the device


def test_the_gears_section_has_one_row_per_gear():
    entries = [{"sizes": {"batch": b}, "path": f"gears/batch={b}", "compile_s": 1.5,
                "size_bytes": 2048, **gear_summary(_gear_report(use))}
               for b, use in ((1, 0.3), (8, 1.2))]
    report = {"gears": entries, "compile_s_total": 3.0, "size_bytes_total": 4096,
              "gear_symbols": {"batch": {"mode": "padded", "why": "checked", "gears": [1, 8]}}}
    (title, body), (sym_title, sym_body) = sections(report)[:2]
    assert title.startswith("Gears")
    rows = [line for line in body.splitlines() if line.startswith("batch=")]
    assert len(rows) == 2 and "12.5 us" in rows[0] and "UB 78%" in rows[0]
    assert rows[0].rstrip().endswith("ok") and rows[1].rstrip().endswith("OVER")
    assert "2 static programs: 3.00 s to compile, 4.0 KB" in body
    assert "padded" in sym_body


@pytest.mark.slow   # two ascend-910b gear compiles, ~10 s
def test_analyze_json_lists_the_gears_and_the_artifact_loads_again(tmp_path, capsys):
    from anychip.compiler.artifact import load_artifact

    path = tmp_path / "dyn.onnx"
    onnx.save(conv_batch_model(), str(path))
    assert main(["analyze", str(path), "--target", "ascend-910b", "--gears", "batch=1,2",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [g["sizes"] for g in report["gears"]] == [{"batch": 1}, {"batch": 2}]
    for g in report["gears"]:
        assert FIELDS <= set(g) and g["compile_s"] > 0 and g["size_bytes"] > 0
        assert g["buffer_check"]["passed"] and g["buffer_check"]["device_memory_use"] < 1
        assert g["estimate"]["time_us"] > 0
    assert main(["analyze", str(path), "--target", "ascend-910b", "--gears", "batch=1,2"]) == 0
    text = capsys.readouterr().out
    assert "Gears (one static program each" in text and "batch=2" in text
    out = tmp_path / "a.anychip"
    assert main(["compile", str(path), "--target", "ascend-910b", "--gears", "batch=1,2",
                 "-o", str(out)]) == 0
    load_artifact(out)   # each gear's own manifest passes the backend's load check
