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
