"""VmRunner keeps TVM's load-time log off the terminal: loading a second artifact into a
process made TVM print "SystemLib symbol ... overriden" for every load (verify --target all)."""

from __future__ import annotations

import numpy as np

import anychip
from anychip.compiler.inputs import random_inputs

from ...conftest import make_linear_model


def test_loading_several_artifacts_prints_nothing_on_stderr(capfd):
    outputs = []
    for target in ("cpu", "ascend-310p", "ascend-910"):
        art = anychip.compile(make_linear_model(), target=target)
        outputs.append(art.run(random_inputs(art.inputs, 0)))
    assert all(np.all(np.isfinite(np.asarray(o["y"]))) for o in outputs)
    assert "overriden" not in capfd.readouterr().err


def _identity_model(dtypes: dict[str, int]):
    from onnx import helper

    nodes = [helper.make_node("Identity", [f"x_{n}"], [f"y_{n}"]) for n in dtypes]
    graph = helper.make_graph(
        nodes, "ids", [helper.make_tensor_value_info(f"x_{n}", t, [2, 3]) for n, t in dtypes.items()],
        [helper.make_tensor_value_info(f"y_{n}", t, [2, 3]) for n, t in dtypes.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inputs_and_outputs_cross_exactly_and_outputs_are_the_callers():
    """Host tensors cross through numpy's DLPack view of TVM's aligned buffers (plain dtypes)
    or TVM's own conversion (bool): values exact, and an output is a copy the next run does
    not touch."""
    from onnx import TensorProto

    dtypes = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16, "i64": TensorProto.INT64,
              "u8": TensorProto.UINT8, "b": TensorProto.BOOL}
    art = anychip.compile(_identity_model(dtypes), target="cpu")
    rng = np.random.default_rng(0)
    feed = {"x_f32": rng.standard_normal((2, 3)).astype(np.float32),
            "x_f16": rng.standard_normal((2, 3)).astype(np.float16),
            "x_i64": rng.integers(-2**40, 2**40, (2, 3)),
            "x_u8": rng.integers(0, 255, (2, 3)).astype(np.uint8),
            "x_b": rng.random((2, 3)) > 0.5}
    first = art.run(feed)
    for name, value in feed.items():
        got = first["y_" + name[2:]]
        assert got.dtype == value.dtype and np.array_equal(got, value), name
    kept = {k: v.copy() for k, v in first.items()}
    art.run({k: (v + 1).astype(v.dtype) if v.dtype != bool else ~v for k, v in feed.items()})
    assert all(np.array_equal(first[k], kept[k]) for k in kept)


WIDE = 8192


def _weight():
    return (np.arange(3 * WIDE, dtype=np.float32).reshape(3, WIDE) % 17) - 8


def _mixed_outputs_model():
    """Outputs of every kind of memory: computed this run (a product and a reshape of it, each
    above the runner's VIEW_MIN_ELEMENTS), an input passed through, a constant."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(_weight(), "w")
    const = numpy_helper.from_array(np.full((2,), 7, np.float32), "c")
    shape = numpy_helper.from_array(np.array([2 * WIDE], np.int64), "s")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["prod"]),
             helper.make_node("Reshape", ["prod", "s"], ["flat"]),
             helper.make_node("Identity", ["x"], ["same"]),
             helper.make_node("Identity", ["c"], ["const"])]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "mixed", [helper.make_tensor_value_info("x", f, [2, 3])],
        [helper.make_tensor_value_info(n, f, s) for n, s in
         [("prod", [2, WIDE]), ("flat", [2 * WIDE]), ("same", [2, 3]), ("const", [2])]],
        [weight, const, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_outputs_stay_the_callers_over_many_runs_and_computed_ones_are_not_copied():
    """From the second run a computed output is the VM's own memory, handed over without a
    copy (4 MB of logits cost 0.4 ms to copy); an input passed through and a constant are
    memory the next run reuses or shares, and stay copies: every earlier result survives
    every later run, and writing into a result changes no later one."""
    art = anychip.compile(_mixed_outputs_model(), target="cpu")
    rng = np.random.default_rng(1)
    weight = _weight()
    runs = []
    for _ in range(4):
        x = rng.standard_normal((2, 3)).astype(np.float32)
        out = art.run({"x": x})
        runs.append((x, out, {k: v.copy() for k, v in out.items()}))
    for x, out, kept in runs:   # no later run wrote into an earlier result
        assert all(np.array_equal(out[k], kept[k]) for k in kept)
        np.testing.assert_allclose(kept["prod"], x @ weight, rtol=1e-5, atol=1e-5)
        assert np.array_equal(kept["flat"], kept["prod"].reshape(-1))
        assert np.array_equal(kept["same"], x) and np.array_equal(kept["const"], [7, 7])
    for value in art.run({"x": runs[0][0]}).values():
        value[...] = -1.0   # the caller owns what it got: no later run sees this
    last = art.run({"x": runs[1][0]})
    assert all(np.array_equal(last[k], runs[1][2][k]) for k in last)
    assert not last["prod"].flags.owndata          # the VM's memory, no copy
    assert last["same"].flags.owndata and last["const"].flags.owndata
