"""backends/simt/compound_dims.py: kernels over a dim that is an affine expression of the
symbols (wav2vec 2.0's `samples // 20 - 1` frames) see a plain symbol. The rewritten graph
computes the same values (built and run on the host), and a model whose softmax and
transpose run over `seq - 1` compiles for GPU targets, where dlight's rules raised on it, and
its kernels execute correctly on this machine's OpenCL device where there is one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import anychip
from anychip.backends.simt.compound_dims import isolate_compound_dims
from anychip.compiler.registry import get_backend, get_profile

tvm = pytest.importorskip("tvm")


def _relax_softmax_transpose():
    from tvm import relax, tirx

    s = tirx.Var("s", "int64")
    x = relax.Var("x", relax.TensorType((2, s, 3), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            frames = bb.emit(relax.op.strided_slice(x, axes=[1], begin=[1], end=[s]))
            t = bb.emit(relax.op.permute_dims(frames, [0, 2, 1]))   # (2, 3, s - 1)
            y = bb.emit(relax.op.nn.softmax(t, axis=-1))
            out = bb.emit_output(relax.op.add(y, y))
        bb.emit_func_output(out)
    return bb.get()


def _run_on_host(mod, x):
    from tvm import relax

    exe = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_isolated_dims_compute_the_same_values():
    mod = _relax_softmax_transpose()
    isolated, definitions = isolate_compound_dims(mod)
    assert len(definitions) == 1 and "s - " in str(*definitions.values())   # max(s - 1, 0)
    x = np.random.default_rng(0).standard_normal((2, 9, 3)).astype(np.float32)
    t = x[:, 1:].transpose(0, 2, 1)
    e = np.exp(t - t.max(-1, keepdims=True))
    want = 2 * e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(_run_on_host(isolated, x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_run_on_host(mod, x), want, rtol=1e-5, atol=1e-6)
    # the transpose and softmax kernels read plain symbols (the slice makes `s - 1` from `s`)
    lowered = tvm.relax.transform.LegalizeOps()(isolated)
    kernels = {gv.name_hint: f for gv, f in lowered.functions.items()
               if isinstance(f, tvm.tirx.PrimFunc) and "slice" not in gv.name_hint}
    assert len(kernels) == 3, list(kernels)
    for func in kernels.values():
        assert "s - " not in func.script().split("):")[0], func.script()


def _frames_model() -> onnx.ModelProto:
    """x [batch, 4, seq] -> a width-2 convolution (seq - 1 frames, as wav2vec 2.0's feature
    extractor makes samples // 20 - 1) -> attention-like softmax over the frames."""
    weight = np.random.default_rng(1).standard_normal((4, 4, 2)).astype(np.float32)
    shape = numpy_helper.from_array(np.array([0, 0, 2, 2], np.int64), "heads")
    nodes = [helper.make_node("Conv", ["x", "w"], ["f"]),                 # [b, 4, seq - 1]
             helper.make_node("Transpose", ["f"], ["ft"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["ft", "heads"], ["fh"]),       # [b, seq - 1, 2, 2]
             helper.make_node("Transpose", ["fh"], ["q"], perm=[0, 2, 1, 3]),
             helper.make_node("Transpose", ["fh"], ["k"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["q", "k"], ["scores"]),    # [b, 2, seq-1, seq-1]
             helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "q"], ["y"])]
    graph = helper.make_graph(
        nodes, "frames",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, "frames", 2])],
        [numpy_helper.from_array(weight, "w"), shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _compiles_here(target: str) -> bool:
    profile = get_profile(target)
    return get_backend(profile).execution(profile).mode.value != "unavailable"


@pytest.mark.parametrize("target", [t for t in ("nvidia-h100", "biren-br104")
                                    if _compiles_here(t)])
def test_a_softmax_over_seq_minus_one_compiles_for_gpus(target):
    dims = {"batch": (1, 4), "seq": (2, 64)}
    art = anychip.compile(_frames_model(), target=target, dims=dims)
    assert list(art.report["compound_dims_isolated"].values()) == ["seq - T.int64(1)"]
    if target == "biren-br104":
        from anychip.compiler.errors import NotExecutable

        try:
            report = get_backend(get_profile(target)).execute_kernels(
                _frames_model(), target, dims=dims)
        except NotExecutable as exc:
            pytest.skip(f"no OpenCL device here to execute the kernels on: {exc}")
        assert report.passed and report.counts()["skipped"] == 0, report.summary()
