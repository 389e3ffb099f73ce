"""Concatenations along the innermost axis with at least concat.MIN_PARTS inputs are scheduled
one input at a time (backends/host/concat.py): the kernel's results equal TVM's unscheduled
loop nest, including parts whose size is no multiple of the vector width; a model whose
convolutions' outputs are joined along the channels matches ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.s_tir import dlight

import anychip
from anychip.backends.cpu.backend import host_cpu_name
from anychip.backends.host import concat, schedule


def _concat_relu(widths: list[int], hw: int):
    """The fused PrimFunc of relu(concat(x_i, axis=-1) * scale + shift) on NHWC inputs."""
    from tvm.script import relax as R

    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", R.Tensor((1, hw, hw, w), "float32")) for i, w in enumerate(widths)]
    rng = np.random.default_rng(len(widths))
    total = sum(widths)
    with bb.function("main", xs):
        with bb.dataflow():
            y = bb.emit(relax.op.concat(xs, axis=3))
            y = bb.emit(relax.op.multiply(y, relax.const(
                rng.standard_normal((1, 1, 1, total)).astype("float32"))))
            y = bb.emit(relax.op.nn.relu(y))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(), relax.transform.FuseOps(),
        relax.transform.FuseTIR()])(bb.get())
    func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    return func.with_attr("global_symbol", "main")


@pytest.mark.parametrize("widths, hw", [([64, 32, 32, 32, 32, 32], 6), ([13, 7, 7, 20], 5)])
def test_partitioned_concatenation_equals_the_plain_loop_nest(widths, hw, monkeypatch):
    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name(), "num-cores": 2})
    func = _concat_relu(widths, hw)
    applied = []
    real = concat.partition_concat
    monkeypatch.setattr(schedule, "partition_concat",
                        lambda *a: applied.append(real(*a)) or applied[-1])
    with target:
        scheduled = dlight.ApplyDefaultSchedule(*schedule.schedule_rules(parallel=False))(
            tvm.IRModule({"main": func}))
    assert applied == [True]
    fast = tvm.compile(scheduled, target=target)
    plain = tvm.compile(tvm.IRModule({"main": func}), target=target)
    rng = np.random.default_rng(0)
    inputs = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape])
                                 .astype("float32")) for p in func.params[:-1]]
    shape = [int(d) for d in func.params[-1].shape]
    got, want = (tvm.runtime.tensor(np.zeros(shape, "float32")) for _ in range(2))
    fast["main"](*inputs, got)
    plain["main"](*inputs, want)
    # the epilogue's multiply may contract differently once vectorized: within an ulp
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-7, atol=1e-7)


def test_inception_like_branches_joined_match_onnx_runtime(monkeypatch):
    """Four convolution branches concatenated along the channels (NCHW axis 1, NHWC's last
    after the layout pass), then relu: the partition takes the join."""
    rng = np.random.default_rng(3)
    widths = [16, 8, 24, 8]
    inits, nodes = [], []
    for i, w in enumerate(widths):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((w, 8, 3, 3)) / 3).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", ["x", f"w{i}"], [f"b{i}"], pads=[1, 1, 1, 1]))
    inits.append(numpy_helper.from_array(
        (rng.standard_normal((8, sum(widths), 1, 1)) / 5).astype(np.float32), "wo"))
    nodes += [helper.make_node("Concat", [f"b{i}" for i in range(4)], ["c"], axis=1),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("Conv", ["r", "wo"], ["y"])]   # the join stays NHWC inside
    graph = helper.make_graph(
        nodes, "branches", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    applied = []
    real = concat.partition_concat
    monkeypatch.setattr(schedule, "partition_concat",
                        lambda *a: applied.append(real(*a)) or applied[-1])
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()
    assert True in applied


def test_two_inputs_keep_the_fused_loop():
    """Two inputs (51 GB/s as one fused vectorized loop already): not partitioned."""
    sch, infos, _ = schedule.inline_injective(_concat_relu([64, 32], 4))
    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name()})
    assert not concat.partition_concat(sch, infos[-1].block_rv, target, False, 16384)
    sch, infos, _ = schedule.inline_injective(_concat_relu([64, 32, 32], 4))
    assert concat.partition_concat(sch, infos[-1].block_rv, target, False, 16384)


def test_a_join_of_very_many_inputs_keeps_the_fused_loop(monkeypatch):
    """Over MAX_PARTS inputs each part would be a block of its own: not partitioned."""
    monkeypatch.setattr(concat, "MAX_PARTS", 4)
    sch, infos, _ = schedule.inline_injective(_concat_relu([8] * 5, 2))
    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name()})
    assert not concat.partition_concat(sch, infos[-1].block_rv, target, False, 16384)
