"""Compile time grows about linearly with graph size (issue 19, item 1): chains of elementwise
nodes (scripts/bench_chain.py has the generator and the benchmark)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

import anychip
from anychip.backends.host import schedule

_SPEC = importlib.util.spec_from_file_location(
    "bench_chain", Path(__file__).resolve().parents[2] / "scripts" / "bench_chain.py")
bench_chain = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_chain)


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")   # every compile is timed and checked


def _compile(nodes: int, target: str = "cpu"):
    return anychip.compile(bench_chain.chain_model(nodes), target=target)


def test_inlined_size_counts_every_read_of_an_inlined_producer():
    """A NaN-propagating relu reads x three times: its inlined tree triples x's."""
    from tvm import tirx

    buf = tirx.decl_buffer((4,), "float32", "x")
    load = tirx.BufferLoad(buf, [tirx.const(0, "int32")])
    expr = tirx.Select(tirx.isnan(load), load, tirx.max(load, tirx.const(0.0, "float32")))
    alone = schedule._inlined_size(expr, {})
    assert schedule._inlined_size(expr, {buf.__chandle__(): 10}) == alone + 3 * 9


@pytest.mark.slow   # 8 s at load 8 (the first compile of the run pays TVM's set-up)
@pytest.mark.parametrize("nodes", [24])
def test_relu_chain_compiles_without_exponential_inlining(nodes):
    """24 nodes of Add/Relu/Mul fused into one kernel: every NaN-propagating relu reads its
    operand three times, so inlining everything copied the chain 3^8 times and more (15 nodes took
    200 s, 300 nodes did not finish). Results, NaN included, are numpy's."""
    start = time.perf_counter()
    art = _compile(nodes)
    elapsed = time.perf_counter() - start
    x = np.linspace(-3, 3, 16, dtype=np.float32).reshape(1, 16)
    x[0, 3] = np.nan
    got = art.run({"x": x})["y"]
    want = bench_chain.chain_reference(x, nodes)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isnan(got[0, 3])
    assert elapsed < 120, f"{nodes}-node chain took {elapsed:.0f} s"


@pytest.mark.slow
def test_compile_time_is_near_linear_in_chain_length():
    """A 20k-node chain costs less than 20x a 2k one (linear: 10x; machine load scales
    both alike, so the ratio is what is checked, not the time)."""
    _compile(200)   # warm: TVM's and LLVM's one-time initialisation
    times = {}
    for nodes in (2000, 20000):
        start = time.perf_counter()
        art = _compile(nodes)
        times[nodes] = time.perf_counter() - start
        x = np.full((1, 16), 0.25, np.float32)
        np.testing.assert_allclose(art.run({"x": x})["y"],
                                   bench_chain.chain_reference(x, nodes), rtol=1e-4)
    assert times[20000] / times[2000] < 20, times


def test_partition_offers_only_patterns_whose_root_is_in_the_graph():
    """FuseOpsByPattern costs graph size x patterns tried: a graph without conv2d, matmul,
    softmax, layer norm or max pooling is not searched at all (a 6k-node chain: 12.7 s)."""
    from anychip.backends.cpu.backend import _library
    from anychip.compiler.dispatch import partition
    from anychip.compiler.dispatch.partition import _ops_in
    from anychip.compiler.driver import neutral_relax
    from anychip.compiler.frontend import load_model

    mod = neutral_relax(load_model(bench_chain.chain_model(30)))
    assert {"relax.add", "relax.multiply", "relax.nn.relu"} <= _ops_in(mod)
    assert not _ops_in(mod) & {"relax.matmul", "relax.nn.conv2d", "relax.nn.softmax"}
    same, report = partition(mod, _library())
    assert same is mod and not report.calls
