"""Resize nearest half_pixel 2->7: row 3's source coordinate is exactly 0.5, which TVM's
reciprocal-multiply (FMA-contracted) puts past the tie; the importer fix gathers with
indices computed the ONNX way. Compared with ONNX Runtime exactly."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def test_resize_2_to_7_nearest_half_pixel_matches_onnxruntime_exactly():
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from anychip.compiler.importer_fixes.converters import register

    register()
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 1, 7, 7])
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 7, 7])], [sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    exe = relax.build(from_onnx(model), target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    assert want[0, 0, 3, 0] == 1.0   # the tie row takes source row 0
    np.testing.assert_array_equal(got, want)


def _upsample_model(coord: str, scale: int, rounding: str = "round_prefer_floor"):
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, scale, scale])
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest",
                            coordinate_transformation_mode=coord, nearest_mode=rounding)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3 * scale, 5 * scale])],
        [scales])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_integer_nearest_upsampling_is_a_repeat_and_matches_onnxruntime():
    """x2 and x3 nearest upsampling whose source index is i // scale (half_pixel with
    round_prefer_floor, asymmetric with floor) is relax.repeat, which the layout conversion
    carries through; asymmetric with ceil (source rows 0, 1, 1, 2, 2, ...) stays a gather. Outputs equal ONNX Runtime's."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from anychip.compiler.importer_fixes.converters import register

    register()
    x = np.arange(30, dtype=np.float32).reshape(1, 2, 3, 5)
    for coord, scale, rounding, repeat in (("half_pixel", 2, "round_prefer_floor", True),
                                           ("asymmetric", 3, "floor", True),
                                           ("asymmetric", 2, "ceil", False)):
        model = _upsample_model(coord, scale, rounding)
        mod = from_onnx(model)
        ops = []
        relax.analysis.post_order_visit(
            mod["main"], lambda e: ops.append(e.op.name) if isinstance(e, relax.Call)
            and isinstance(e.op, tvm.ir.Op) else None)
        assert ("relax.repeat" in ops) == repeat and ("relax.take" in ops) != repeat, ops
        want = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        vm = relax.VirtualMachine(relax.build(mod, target="llvm"), tvm.cpu())
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), want)
