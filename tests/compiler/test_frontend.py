"""Loading untrusted ONNX: each bad input is one clear AnychipError, before anything is opened
or allocated (docs/security.md cases 1-6, 8-10)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from anychip.compiler.errors import AnychipError
from anychip.compiler.frontend import load_model
from tests.conftest import make_linear_model


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_names_are_sanitized_and_originals_kept(linear_path):
    source = load_model(linear_path)
    assert [s.name for s in source.inputs] == ["in/x"]
    assert [s.safe_name for s in source.inputs] == ["in_x"]
    assert [s.safe_name for s in source.outputs] == ["out_y"]
    assert source.proto.graph.input[0].name == "in_x"
    assert source.original.graph.input[0].name == "in/x"  # the reference sees the original
    assert source.inputs[0].shape == (2, 8) and source.inputs[0].dtype == "float32"


@pytest.mark.parametrize("content, why", [
    (b"", "empty"),
    (os.urandom(2048), "protobuf"),
    (json.dumps({"graph": {"node": []}}).encode(), "protobuf"),
])
def test_not_an_onnx_file(tmp_path, content, why):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(AnychipError) as err:
        load_model(path)
    msg = _one_line(err)
    assert str(path) in msg and "not a valid ONNX model" in msg


def test_truncated_model(tmp_path, linear_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(linear_path.read_bytes()[:100])
    with pytest.raises(AnychipError, match="not a valid ONNX model"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(AnychipError, match="no such file"):
        load_model(tmp_path / "absent.onnx")


def test_unknown_ops_are_all_listed(tmp_path):
    model = make_linear_model()
    model.graph.node.append(helper.make_node("FancyOp", ["y"], ["y2"], name="n1"))
    model.graph.node.append(helper.make_node("OtherOp", ["y2"], ["y3"], name="n2"))
    path = tmp_path / "unknown.onnx"
    onnx.save(model, str(path))
    with pytest.raises(AnychipError) as err:
        load_model(path)
    msg = _one_line(err)
    assert "FancyOp (node 'n1')" in msg and "OtherOp (node 'n2')" in msg



@pytest.mark.parametrize("extra", ["inputs", "outputs"])
def test_a_function_call_with_more_arguments_than_declared_is_refused(extra):
    """The checker lets it pass; onnx's inliner asserted inside the compile (fuzzer)."""
    body = helper.make_function("local", "Double", ["p"], ["o"],
                                [helper.make_node("Add", ["p", "p"], ["o"])],
                                [helper.make_opsetid("", 17)])
    call = helper.make_node("Double", ["x", "x"] if extra == "inputs" else ["x"],
                            ["y"] if extra == "inputs" else ["y", "z"], domain="local",
                            name="twice")
    graph = helper.make_graph([call], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, functions=[body], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    with pytest.raises(AnychipError) as err:
        load_model(model)
    assert f"node 'twice' calls function 'Double' with 2 {extra}, but it declares 1" in \
        _one_line(err)

def _with_external(tmp_path, location: str) -> "os.PathLike":
    model = make_linear_model()
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    w.external_data.add(key="location", value=location)
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    path = folder / "m.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "a/../../secret.bin", "/etc/passwd",
                                      "C:\\x.bin", "\\\\server\\share\\x.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 128)
    path = _with_external(tmp_path, location)
    with pytest.raises(AnychipError) as err:
        load_model(path)
    msg = _one_line(err)
    assert "tensor 'W'" in msg and "refused" in msg


def test_external_data_symlink_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 128)
    path = _with_external(tmp_path, "w.bin")
    os.symlink(tmp_path / "secret.bin", path.parent / "w.bin")
    with pytest.raises(AnychipError, match="symbolic link"):
        load_model(path)


def test_external_data_too_short_is_refused(tmp_path):
    path = _with_external(tmp_path, "w.bin")
    (path.parent / "w.bin").write_bytes(b"\0" * 16)  # W needs 8*4*4 = 128 bytes
    with pytest.raises(AnychipError, match="needs 128"):
        load_model(path)


def test_external_data_inside_the_folder_loads(tmp_path):
    path = _with_external(tmp_path, "w.bin")
    weights = np.arange(32, dtype=np.float32).reshape(8, 4)
    (path.parent / "w.bin").write_bytes(weights.tobytes())
    source = load_model(path)
    loaded = numpy_helper.to_array(source.original.graph.initializer[0])
    np.testing.assert_array_equal(loaded, weights)


def test_raw_data_length_mismatch(tmp_path):
    model = make_linear_model()
    model.graph.initializer[0].raw_data = b"\0" * 12
    path = tmp_path / "short.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(AnychipError, match="raw_data holds 12 bytes"):
        load_model(path)


def test_huge_dims_are_refused_before_allocating(tmp_path):
    model = make_linear_model()
    t = model.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([2**31, 2**31, 16])
    path = tmp_path / "huge.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(AnychipError, match="over the limit"):
        load_model(path)


def test_deep_subgraph_nesting_is_refused(tmp_path):
    inner = helper.make_graph([helper.make_node("Identity", ["c"], ["o"])], "g", [],
                              [helper.make_tensor_value_info("o", TensorProto.BOOL, [])])
    leaf = inner
    for _ in range(25):  # only one branch nests: the serialized size stays linear
        node = helper.make_node("If", ["c"], ["o"], then_branch=inner, else_branch=leaf)
        inner = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("o", TensorProto.BOOL, [])])
    graph = helper.make_graph(inner.node, "top",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("o", TensorProto.BOOL, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "deep.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(AnychipError, match="nested more than"):
        load_model(path)


def test_bytes_with_external_data_are_refused(tmp_path):
    path = _with_external(tmp_path, "w.bin")
    with pytest.raises(AnychipError, match="without a folder"):
        load_model(path.read_bytes())


def test_dynamic_dim_stays_symbolic_and_shape_specialises(tmp_path):
    """A dim_param is a symbol now (tests/compiler/test_dynamic_shapes.py); --shape still
    specialises it, and the output's dim follows."""
    model = make_linear_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    assert load_model(path).inputs[0].shape[0] == "batch"
    source = load_model(path, shapes={"x": (3, 8)})
    assert source.inputs[0].shape == (3, 8)
    assert source.outputs[0].shape == (3, 4)


@pytest.mark.parametrize("weight_shape, attrs, why", [
    ((4, 3, 3), {}, "spatial dimensions"),
    ((4, 3, 3, 3), {"dilations": [1, 1, 1]}, "dilations has incorrect size"),
    ((4, 3, 3, 3), {"pads": [-5, 0, 0, 0]}, "negative"),
])
def test_malformed_conv_names_the_node(tmp_path, weight_shape, attrs, why):
    w = numpy_helper.from_array(np.zeros(weight_shape, np.float32), "W")
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="c1", **attrs)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list("abcd"))], [w])
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(AnychipError) as err:
        load_model(path)
    msg = _one_line(err)
    assert "node 'c1' (Conv)" in msg and why in msg and str(path) in msg


@pytest.mark.parametrize("dtype, expect_nan", [(np.float32, True), (np.int32, False)])
def test_out_of_range_gather_never_reads_out_of_bounds(dtype, expect_nan):
    import anychip

    data = numpy_helper.from_array(np.arange(40).astype(dtype).reshape(10, 4), "D")
    node = helper.make_node("Gather", ["D", "i"], ["y"], name="g1", axis=0)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("i", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("y", elem, [3, 4])], [data])
    art = anychip.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    y = art.run({"i": np.array([1, -1, 100000], np.int64)})["y"]
    np.testing.assert_array_equal(y[:2], np.arange(40).reshape(10, 4)[[1, -1]].astype(dtype))
    if expect_nan:
        assert np.isnan(y[2]).all()          # visible, not garbage memory
    else:
        np.testing.assert_array_equal(y[2], np.arange(36, 40))  # clipped to the last row
