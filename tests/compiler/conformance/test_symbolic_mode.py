"""`anychip conformance --symbolic`: each case's input dims become symbols (one per distinct
size) and the case compiles through the symbolic-shape path; where the importer loses a symbol
the failure names the node and op and a --shape within the bounds. Cases built here in ONNX's
case form (collecting the whole node suite takes ~30 s)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from anychip.compiler.conformance.cases import Case
from anychip.compiler.conformance.engines import PASSED, run_case, symbolise


def _case(name, nodes, inputs, expected, opset=18, inits=()) -> Case:
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in inputs]
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, e.shape)
            for i, e in enumerate(expected)]
    graph = helper.make_graph(nodes, name, vis, outs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return Case(name, nodes[0].op_type, model.SerializeToString(), [a for _, a in inputs],
                list(expected), 1e-5, 1e-6)


rng = np.random.default_rng(0)
X, B = rng.standard_normal((3, 4, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
ADD = _case("add_bcast", [helper.make_node("Add", ["x", "b"], ["y0"])], [("x", X), ("b", B)],
            [X + B])
ROW = rng.standard_normal((1, 3)).astype(np.float32)
REDUCE = _case("reduce_max_axes_input",
               [helper.make_node("ReduceMax", ["x", "axes"], ["y0"], keepdims=1)], [("x", ROW)],
               [ROW.max(axis=1, keepdims=True)],
               inits=[numpy_helper.from_array(np.array([1], np.int64), "axes")])


def test_symbolise_names_one_symbol_per_size_and_keeps_ones():
    model = onnx.load_from_string(ADD.model)
    out, dims = symbolise(model, {"x": X, "b": B})
    shapes = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in out.graph.input]
    assert shapes == [["d3", "d4", "d5"], ["d5"]]
    assert dims == {"d3": (3, 3), "d4": (4, 4), "d5": (5, 5)}
    out, _ = symbolise(onnx.load_from_string(REDUCE.model), {"x": ROW})
    assert [d.dim_param or d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] \
        == [1, "d3"]


def test_a_symbolic_broadcast_passes_on_cpu():
    result = run_case(ADD, "cpu", symbolic=True)
    assert result.status == PASSED, result.reason


def test_reduce_max_with_an_axes_input_keeps_the_symbol():
    """importer_fixes/converters.py's ReduceMax/ReduceMin read the shape as ints (for the
    empty-set case); a symbolic dim made that 'int() ... not Var' (softmax *_expanded)."""
    result = run_case(REDUCE, "cpu", symbolic=True)
    assert result.status == PASSED, result.reason


XC = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
WC = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
CONV_NODE = helper.make_node("Conv", ["x", "w"], ["y0"], auto_pad="SAME_LOWER",
                             kernel_shape=[3, 3], strides=[2, 2])


def _reference(nodes, inputs, out_shape):
    """The ONNX reference implementation's outputs for a one-output graph."""
    from onnx.reference import ReferenceEvaluator

    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in inputs]
    out = helper.make_tensor_value_info("y0", TensorProto.FLOAT, out_shape)
    model = helper.make_model(helper.make_graph(nodes, "ref", vis, [out]),
                              opset_imports=[helper.make_opsetid("", 18)])
    return ReferenceEvaluator(model).run(None, dict(inputs))


CONV_SAME = _case("conv_auto_pad_same", [CONV_NODE], [("x", XC), ("w", WC)],
                  _reference([CONV_NODE], [("x", XC), ("w", WC)], [1, 1, 3, 3]))
XH = rng.standard_normal((3, 4, 5)).astype(np.float32)
HARDMAX = _case("hardmax_axis_0", [helper.make_node("Hardmax", ["x"], ["y0"], axis=0)],
                [("x", XH)], [(XH == XH.max(axis=0, keepdims=True)).astype(np.float32)],
                opset=13)


def test_same_padding_over_symbolic_sizes_with_a_stride_passes():
    """TVM's Conv converter evaluated auto_pad SAME with Python 'and' on a symbolic extent;
    the pads are now computed from Shape(x) at run time (importer_fixes/auto_pad.py)."""
    result = run_case(CONV_SAME, "cpu", symbolic=True)
    assert result.status == PASSED, result.reason


def test_a_lost_symbol_names_the_node_op_and_a_shape_within_the_bounds():
    """TVM's Hardmax converter reads the reduced dim as an int (one_hot's depth): the error
    names the node and op and a --shape within the bounds (each symbol's lower bound, here
    the case's sizes), for every dynamic input."""
    result = run_case(HARDMAX, "cpu", symbolic=True)
    assert result.status != PASSED
    assert "(Hardmax)" in result.reason, result.reason
    assert "--shape x=3x4x5" in result.reason, result.reason
