"""An NHWC instance norm on the host: relax_passes.variance_as_means writes the variance as two
means (TOPI's one kernel with two reductions fell to TVM's strided nest on one core), and the
column-reduction schedule runs the per-pixel normalisation fused after a mean as one
vectorized, parallel loop (it was a scalar nest: 3.8 ms for [1, 128, 128, 32]). Values as
numpy's; an InstanceNormalization between NHWC convolutions matches ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax, tirx  # noqa: E402

from anychip.backends.host.relax_passes import variance_as_means  # noqa: E402
from anychip.backends.host.schedule import schedule_rules  # noqa: E402

from .kernels import relax_module  # noqa: E402
from .test_affine_chains import _ops  # noqa: E402

SHAPE = (1, 48, 40, 16)     # NHWC, 30720 values: enough for a parallel loop


def _norm(bb, x):
    """(x - mean) / sqrt(var + eps) over H and W, as DecomposeOpsForInference writes it."""
    mean = bb.emit(relax.op.mean(x, [1, 2], keepdims=True))
    var = bb.emit(relax.op.variance(x, [1, 2], keepdims=True))
    std = bb.emit(relax.op.sqrt(relax.op.add(var, relax.const(1e-5, "float32"))))
    return relax.op.divide(relax.op.subtract(x, mean), std)


def _build(mod, parallel: bool):
    from tvm.s_tir import dlight

    seq = tvm.transform.Sequential([relax.transform.LegalizeOps(),
                                    relax.transform.AnnotateTIROpPattern(),
                                    relax.transform.FuseOps(), relax.transform.FuseTIR()])
    mod = seq(mod)
    with tvm.target.Target("llvm"):
        mod = dlight.ApplyDefaultSchedule(*schedule_rules(parallel=parallel))(mod)
    return mod


def test_variance_becomes_two_means_with_the_same_values():
    mod = relax_module(_norm, SHAPE)
    rewritten = variance_as_means(mod)
    assert "relax.variance" not in _ops(rewritten) and _ops(rewritten).count("relax.mean") == 3
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32) * 3 + 1
    run = [relax.VirtualMachine(tvm.compile(m, target="llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy() for m in (mod, rewritten)]
    np.testing.assert_allclose(run[1], run[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parallel", [False, True])
def test_normalisation_after_a_mean_is_one_vectorized_loop(parallel):
    mod = _build(variance_as_means(relax_module(_norm, SHAPE)), parallel)
    kernels = {gv.name_hint: f.script() for gv, f in mod.functions.items()
               if isinstance(f, tirx.PrimFunc)}
    fused = [text for name, text in kernels.items() if "divide" in name and "mean" in name]
    assert len(fused) == 1, list(kernels)
    # the per-pixel loop: vectorized (and parallel in a parallel build) over all the values
    # (the mean's zeroing is the other vectorized loop)
    assert fused[0].count("T.vectorized(") == 2, fused[0]
    assert ("T.parallel(" in fused[0]) == parallel, fused[0]
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32) * 3 + 1
    got = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy()
    mean, var = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)


def test_instance_norm_between_convolutions_matches_onnxruntime():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import anychip

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32) / 3,
                                     "w1"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 16).astype(np.float32), "s"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((8, 16, 1, 1)).astype(np.float32) / 4,
                                     "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("InstanceNormalization", ["a", "s", "b"], ["n"], epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "inorm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [2, 3, 24, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             [2, 8, 24, 20])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    report = anychip.verify(model, target="cpu")
    assert report.passed, report.summary()
