"""Resource limits on untrusted models (issue 19, items 1, 5 and 6): checks run before any
read or hash, cover function bodies, and refuse with one line naming the tensor or file."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from anychip.compiler import onnx_safety
from anychip.compiler.cli.main import main
from anychip.compiler.errors import AnychipError
from anychip.compiler.frontend import load_model
from anychip.compiler.onnx_safety import check_planned_memory
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import make_linear_model


def test_dev_zero_and_a_named_pipe_are_refused_at_once(tmp_path):
    """Through the cache's fingerprint too (it hashed the file before the loader's checks)."""
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    code = ("import sys\n"
            "from anychip.compiler.cli.main import main\n"
            "codes = [main(['compile', m, '-o', sys.argv[1]]) for m in ('/dev/zero', sys.argv[2])]\n"
            "sys.exit(0 if codes == [2, 2] else 1)\n")
    env = {**os.environ, "ANYCHIP_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("ANYCHIP_NO_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o.anychip"), str(fifo)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("not a regular file") == 2 and proc.stderr.count("\n") == 2


def _conv_chain(width: int) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r"], ["y"], keepdims=1, name="mean")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_static_dim_of_2_31_is_refused_naming_the_tensor():
    with pytest.raises(AnychipError, match="tensor 'x' would hold 8589934588 elements"):
        load_model(_conv_chain(2**31 - 1))


def test_activation_memory_is_checked_against_a_budget():
    model = onnx.shape_inference.infer_shapes(_conv_chain(1 << 20))
    check_planned_memory(model, "m", 64 << 20, "this host")          # 16 MiB tensors fit
    with pytest.raises(AnychipError, match="node 'conv' .*more than the profile"):
        check_planned_memory(model, "m", 4 << 20, "the profile")


def test_total_external_data_is_capped(tmp_path, monkeypatch):
    """Forty tensors pointing at one sparse file pass the per-tensor cap; the total does not."""
    data = tmp_path / "w.bin"
    with open(data, "wb") as fh:
        fh.truncate(4 << 20)
    inits, nodes, prev = [], [], "x"
    for i in range(40):
        t = onnx.TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[1 << 20])
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "w.bin"), ("offset", "0"), ("length", str(4 << 20))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v
        inits.append(t)
        nodes.append(helper.make_node("Add", [prev, f"w{i}"], [f"a{i}"]))
        prev = f"a{i}"
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 << 20])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1 << 20])],
                              inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    monkeypatch.setattr(onnx_safety, "MAX_WEIGHT_BYTES", 100 << 20)
    with pytest.raises(AnychipError, match="weights add up to more than"):
        load_model(path)


def test_node_count_is_capped(monkeypatch):
    monkeypatch.setattr(onnx_safety, "MAX_NODES", 2)
    with pytest.raises(AnychipError, match="3 nodes, over the limit of 2"):
        load_model(make_linear_model())


@pytest.mark.parametrize("field", [b"Relu", b"fc/relu", b"linear"])
def test_non_utf8_strings_are_one_line_exit_2(field, tmp_path, capsys):
    data = make_linear_model().SerializeToString()
    bad = field[:1] + b"\xff" + field[2:]
    path = tmp_path / "bad.onnx"
    path.write_bytes(data.replace(field, bad, 1))
    assert main(["compile", str(path), "-o", str(tmp_path / "o.anychip")]) == 2
    err = capsys.readouterr().err
    assert "not valid UTF-8" in err and err.count("\n") == 1


def test_external_data_inside_a_function_body_is_checked(tmp_path):
    """A Constant in a model-local function may point anywhere; the safety checks see it."""
    secret = tmp_path.parent / "secret.bin"
    secret.write_bytes(b"\0" * 16)
    const = onnx.TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[4])
    const.data_location = TensorProto.EXTERNAL
    entry = const.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    body = [helper.make_node("Constant", [], ["k"], value=const),
            helper.make_node("Add", ["a", "k"], ["b"])]
    fn = helper.make_function("local", "AddK", ["a"], ["b"], body,
                              [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("AddK", ["x"], ["y"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, functions=[fn], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(AnychipError, match=r"'\.\.' is refused"):
        load_model(path)


def test_a_model_too_big_for_the_target_chip_is_refused(monkeypatch):
    """The host check lifted: ascend-310p's 24 GB cannot hold Add's three 12 GB tensors."""
    from anychip.compiler import frontend
    from anychip.compiler.driver import compile_model

    monkeypatch.setattr(frontend, "MAX_ACTIVATION_BYTES", 1 << 50)
    n = 1_500_000_000
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["z"], name="big_add")], "g",
        [helper.make_tensor_value_info(v, TensorProto.DOUBLE, [n]) for v in ("x", "y")],
        [helper.make_tensor_value_info("z", TensorProto.DOUBLE, [n])])
    source = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(AnychipError, match=r"node 'big_add'.*target 'ascend-310p' \(24 GB\)"):
        compile_model(source, target="ascend-310p")
