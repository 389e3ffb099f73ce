"""The matrix across a real local farm (conftest.py): same cells as a local run, spread over
both servers; a server killed mid-matrix loses no cell. The kill comes last (see conftest)."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import onnx
import pytest
from anychip.compiler.conformance.matrix import junit_xml, markdown, run_cell
from anychip.compiler.farm.client import FarmSpec
from anychip.compiler.farm.matrix import farm_cell, farm_matrix

from onnx import TensorProto, helper, numpy_helper

from tests.conftest import make_linear_model

from .conftest import running_a_job

TARGETS = ["cpu", "ascend-910b"]      # ascend-910b: the npu simulator runs on any cpu server
FIELDS = ("status", "passed", "how", "precision", "max_abs", "max_rel", "tolerance", "rule")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix-models")
    paths = []
    for name, opset in (("a.onnx", 17),):      # one model: two cells, one per server
        onnx.save(make_linear_model("x", "y", opset), str(folder / name))
        paths.append(str(folder / name))
    return paths


@pytest.fixture(scope="module")
def local_cells(models):
    return [run_cell(m, t) for m in models for t in TARGETS]


def _same_as_local(cells, local_cells):
    assert [(c.model, c.target) for c in cells] == [(c.model, c.target) for c in local_cells]
    for cell, here in zip(cells, local_cells):
        assert cell.passed, cell
        for name in FIELDS:
            assert getattr(cell, name) == getattr(here, name), (cell.model, cell.target, name)
        assert re.search(r" 127\.0\.0\.1:\d+ \(remote, key cpu\)", cell.where), cell.where


@pytest.mark.slow
def test_matrix_over_two_servers_equals_the_local_one(local_farm, models, local_cells):
    lines: list[str] = []
    cells = farm_matrix(models, TARGETS, FarmSpec(tracker=local_farm.tracker),
                        progress=lines.append, local_slots=1)
    _same_as_local(cells, local_cells)
    servers = {re.search(r"127\.0\.0\.1:\d+", c.where).group() for c in cells}
    assert len(servers) == 2, "cells were not spread over both servers"
    assert markdown(cells, models, TARGETS) == markdown(local_cells, models, TARGETS)
    untimed = [re.sub(rb'time="[^"]*"', b"", junit_xml(c)) for c in (cells, local_cells)]
    assert untimed[0] == untimed[1]
    assert sorted(int(re.match(r"\[cpu (\d)/2\]", ln).group(1)) for ln in lines) == [1, 2]


def test_a_target_without_server_is_compiled_only(local_farm, models):
    spec = FarmSpec(tracker=local_farm.tracker)
    assert spec.key_for("mthreads-s4000") is None and spec.key_for("ascend-910b") == "cpu"
    cell = farm_cell(models[0], "mthreads-s4000", spec, None)   # as the matrix's worker does
    from anychip.compiler.registry import execution, get_profile

    if execution(get_profile("mthreads-s4000")).mode.value == "unavailable":
        assert cell.status == "unavailable", cell       # no toolchain here: not a failure
        return
    assert cell.status == "compiled only" and cell.passed and cell.where == "", cell
    assert cell.text() == "compiled only ✓ (no device in the farm)"


def _slow_model(path, layers: int = 12, n: int = 1024) -> str:
    """y = tanh(...tanh(x @ W)... @ W): ~2 GFLOP per layer, so the job runs for a few hundred
    ms (a small model's job lasts ~20 ms: too short to be caught mid-run by polling /proc)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32),
                                "W")
    nodes, prev = [], "x"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [prev, "W"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"t{i}" if i < layers - 1 else "y"])]
        prev = f"t{i}"
    graph = helper.make_graph(nodes, "slow",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
                              [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.mark.slow
def test_killing_a_server_mid_job_loses_no_cell(local_farm, tmp_path):
    """The server is killed while it runs the job (its job process exists, so the client is
    waiting for the answer): the cell is run again on the other server and is the same as
    a local one."""
    models = [_slow_model(tmp_path / "slow.onnx")]
    local = [run_cell(models[0], "cpu")]
    killed = []

    def kill_the_first_server_running_a_job():
        deadline = time.monotonic() + 600
        while not killed and time.monotonic() < deadline:
            for server in local_farm.servers:
                if server.poll() is None and running_a_job(server.pid):
                    local_farm.kill(server)
                    killed.append(server.pid)
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_first_server_running_a_job, daemon=True)
    killer.start()
    cells = farm_matrix(models, ["cpu"], FarmSpec(tracker=local_farm.tracker), local_slots=1)
    killer.join(5)
    assert killed, "no server was caught running a job"
    _same_as_local(cells, local)
    assert "retried after: lost " in cells[0].where, cells[0].where
    assert sum(s.poll() is None for s in local_farm.servers) == 1
