"""compiler/importer.py: TVM's from_onnx runs onnx's checker on the model it imports; the
checker sees the model's light twin (no pass over the weights), in the importing thread only."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnx.checker
from onnx import TensorProto, helper, numpy_helper

from anychip.compiler.frontend import load_model
from anychip.compiler.importer import to_relax


def _dense_model(k: int = 256, n: int = 256) -> onnx.ModelProto:
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_tvm_import_checks_the_graph_without_the_weights(monkeypatch):
    source = load_model(_dense_model())
    weights = source.proto.ByteSize()             # 256 KiB of weights
    checked: list[int] = []
    real = onnx.checker.C.check_model

    def sizes(data, *args):                       # onnx's C++ checker, given bytes
        checked.append(len(data))
        return real(data, *args)

    monkeypatch.setattr(onnx.checker.C, "check_model", sizes)
    mod = to_relax(source)
    assert "main" in [gv.name_hint for gv in mod.get_global_vars()]
    assert checked and max(checked) < weights // 50, (checked, weights)
    checked.clear()                               # outside the import: onnx's own checker
    onnx.checker.check_model(source.proto)
    assert checked == [source.proto.ByteSize()]


def test_other_threads_get_the_whole_model_checked_during_an_import(monkeypatch):
    """The checker sees the twin only in the thread that is importing: a check made by
    another thread meanwhile (here: from inside TVM's own check) gets the whole model."""
    source, other = load_model(_dense_model()), load_model(_dense_model(k=512))
    seen: list[int] = []
    real = onnx.checker.C.check_model

    def from_another_thread(data, *args):
        if not seen:                              # the import's own check (the twin)
            seen.append(len(data))
            worker = threading.Thread(target=onnx.checker.check_model, args=(other.proto,))
            worker.start()
            worker.join()
        else:
            seen.append(len(data))
        return real(data, *args)

    monkeypatch.setattr(onnx.checker.C, "check_model", from_another_thread)
    to_relax(source)
    assert len(seen) == 2 and seen[0] < 4096 and seen[1] == other.proto.ByteSize()
