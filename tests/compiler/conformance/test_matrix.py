"""`anychip matrix`: cells say how each target ran, with error figures; a failed cell that
should pass makes the exit code 1; markdown and JUnit are written for CI."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from anychip.compiler.cli.main import main
from anychip.compiler.conformance.matrix import run_cell
from tests.conftest import make_linear_model


def test_cell_on_cpu_is_executed_with_error_figures(tmp_path):
    path = tmp_path / "lin.onnx"
    onnx.save(make_linear_model(), str(path))
    cell = run_cell(str(path), "cpu")
    assert (cell.status, cell.passed, cell.precision) == ("executed", True, "fp32")
    assert cell.max_rel is not None and cell.max_rel < 1e-4
    assert cell.tolerance == "rtol=0.0001 atol=0.0001"


def test_cli_markdown_junit_and_exit_codes(tmp_path, capsys):
    good = tmp_path / "lin.onnx"
    onnx.save(make_linear_model(), str(good))
    bad = tmp_path / "deform.onnx"       # DeformConv: no TVM converter, no ONNX function body
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"])
    graph = helper.make_graph(
        [node], "deform",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3]),
         helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(bad))
    md, xml = tmp_path / "m.md", tmp_path / "m.xml"
    assert main(["matrix", str(good), "--targets", "cpu", "--markdown", str(md),
                 "--junit", str(xml)]) == 0
    assert "| model | cpu |" in md.read_text() and "executed ✓" in md.read_text()
    assert 'failures="0"' in xml.read_text()
    capsys.readouterr()
    assert main(["matrix", str(good), str(bad), "--targets", "cpu", "--json"]) == 1
    import json

    cells = json.loads(capsys.readouterr().out)
    assert [c["status"] for c in cells] == ["executed", "failed"]
    assert "DeformConv" in cells[1]["reason"]
    assert np.isfinite(cells[0]["max_abs"])


def test_models_in_parallel_workers_give_the_serial_cells_in_order(tmp_path, capsys):
    """--jobs 2 checks each model in its own worker process: the same cells, in models x
    targets order, as one process gives; stdout stays pure JSON."""
    import json

    paths = []
    for i, names in enumerate([("x", "y"), ("a/in", "b/out"), ("p", "q")]):
        path = tmp_path / f"m{i}.onnx"
        onnx.save(make_linear_model(*names), str(path))
        paths.append(str(path))
    runs = {}
    for jobs in ("1", "2"):
        assert main(["matrix", *paths, "--targets", "cpu,ascend-310p", "--json",
                     "--jobs", jobs]) == 0
        runs[jobs] = json.loads(capsys.readouterr().out)
    keys = [(c["model"], c["target"], c["status"], c["max_abs"]) for c in runs["1"]]
    assert keys == [(c["model"], c["target"], c["status"], c["max_abs"]) for c in runs["2"]]
    assert [k[:2] for k in keys] == [(p, t) for p in paths for t in ("cpu", "ascend-310p")]
    assert main(["matrix", paths[0], "--targets", "cpu", "--jobs", "0"]) == 2
