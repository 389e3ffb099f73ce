"""Shared fixtures: tiny ONNX models built with onnx.helper (no torch, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

SLOW_CASES = Path(__file__).with_name("slow_cases.txt")
WORKER_MEMORY_BYTES = 6 << 30   # the biggest cases (an npu verify of vgg19) peak near 7.6 GB
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (the README's test command): one worker per usable core, at most 4 and as many
    as the memory holds. xdist's own default counts physical cores, which is 1 on a 2-vCPU VM
    with SMT, and ignores memory; most cases are single-threaded TVM compiles, so two workers
    on two cores halve the suite's time."""
    import os

    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    by_memory = psutil.virtual_memory().total // WORKER_MEMORY_BYTES
    return max(1, min(cores or 1, MAX_WORKERS, by_memory))


def pytest_collection_modifyitems(config, items):
    """Mark the measured-long parametrized cases of tests/slow_cases.txt slow, so that the fast
    lane stays under 5 minutes while their cheap siblings (the cpu case of a target matrix)
    stay in it."""
    listed = {line.strip() for line in SLOW_CASES.read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    for item in items:
        if item.nodeid in listed:
            item.add_marker(pytest.mark.slow)


def make_linear_model(in_name: str = "x", out_name: str = "y", opset: int = 17) -> onnx.ModelProto:
    """y = relu(x @ W + b) with seeded weights; names may contain '/' to test sanitizing."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B")
    nodes = [helper.make_node("MatMul", [in_name, "W"], ["mm"], name="fc/matmul"),
             helper.make_node("Add", ["mm", "B"], ["z"], name="fc/add"),
             helper.make_node("Relu", ["z"], [out_name], name="fc/relu")]
    graph = helper.make_graph(nodes, "linear",
                              [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [2, 4])],
                              [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture
def linear_model() -> onnx.ModelProto:
    return make_linear_model()


@pytest.fixture
def linear_path(tmp_path):
    path = tmp_path / "linear.onnx"
    onnx.save(make_linear_model("in/x", "out/y"), str(path))
    return path


@pytest.fixture
def library_gemms(monkeypatch):
    """GEMM-shaped calls stay on the library at any size (TVM's register-tiled kernel,
    backends/host/gemm.py, would take the small ones these tests build): what they test is
    the library's own paths. The compile cache is off, so an artifact built this way is
    never served to another test."""
    from anychip.backends.cpu import torch_library

    monkeypatch.setattr(torch_library, "_gemm_for_tvm", lambda pattern, annotated: False)
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
