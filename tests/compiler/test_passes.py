"""Target-neutral Relax passes: what they rewrite, and that the result still matches ORT."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import anychip


def _pow_model(exponent: float, negative_base: bool = True):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
    e = helper.make_tensor("e", TensorProto.FLOAT, [], [exponent])
    nodes = [helper.make_node("Pow", ["x", "e"], ["y"])]
    graph = helper.make_graph(nodes, "pow", [x], [y], [e])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _relax_ops(model) -> str:
    import tvm

    from anychip.compiler.frontend import load_model
    from anychip.compiler.importer import to_relax
    from anychip.compiler.passes import target_neutral_passes

    mod = tvm.transform.Sequential(target_neutral_passes())(to_relax(load_model(model, None, {})))
    return mod.script()


@pytest.mark.parametrize("exponent,products", [(2.0, 1), (3.0, 2)])
def test_small_integer_powers_become_products(exponent, products):
    """Fast-math GPU code computes powf as exp2(y*log2(x)): NaN for negative x."""
    script = _relax_ops(_pow_model(exponent))
    assert "R.power" not in script and script.count("R.multiply") == products
    x = {"x": -np.abs(np.random.default_rng(0).standard_normal((4, 8))).astype(np.float32)}
    report = anychip.verify(_pow_model(exponent), target="cpu", inputs=x)
    assert report.passed, report.summary()


def test_other_exponents_stay_powers():
    assert "R.power" in _relax_ops(_pow_model(2.5))
