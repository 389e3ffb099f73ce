"""The matrix across a real local farm (conftest.py): same cells as a local run, spread over
both servers; a server killed mid-matrix loses no cell. The kill comes last (see conftest)."""

from __future__ import annotations

import re
import threading
import time

import onnx
import pytest
from anychip.compiler.conformance.matrix import junit_xml, markdown, run_cell
from anychip.compiler.farm.client import FarmSpec
from anychip.compiler.farm.matrix import farm_cell, farm_matrix

from tests.conftest import make_linear_model

from .conftest import in_session

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


@pytest.mark.slow
def test_killing_a_server_mid_matrix_loses_no_cell(local_farm, models, local_cells):
    killed = []

    def kill_the_first_busy_server():
        deadline = time.monotonic() + 600
        while not killed and time.monotonic() < deadline:
            for server in local_farm.servers:
                if server.poll() is None and in_session(server.pid):
                    local_farm.kill(server)
                    killed.append(server.pid)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_busy_server, daemon=True)
    killer.start()
    cells = farm_matrix(models, TARGETS, FarmSpec(tracker=local_farm.tracker), local_slots=1)
    killer.join(5)
    assert killed, "no server was caught serving a cell"
    _same_as_local(cells, local_cells)
    assert sum("retried after: " in c.where for c in cells) >= 1
    assert sum(s.poll() is None for s in local_farm.servers) == 1
