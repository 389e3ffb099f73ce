"""The cube: tensorized kernels have the hardware's numerics, tiles fit the buffers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anychip.backends.npu.chip import Chip
from anychip.backends.npu.cube import (SCOPES, Conv2dGeometry, CubePlan, Tile, buffer_use,
                                       check_capacity, cube_kernel, plan_tiles)
from anychip.compiler.errors import AnychipError
from anychip.compiler.registry import get_profile


def _np_dtype(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _run(func, *arrays, out_shape, out_dtype):
    import tvm

    lib = tvm.compile(tvm.IRModule({"main": func}), target={"kind": "llvm"})
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype), dev)
    lib(*[tvm.runtime.tensor(a, dev) for a in arrays], out)
    return out.numpy()


def _inputs(dtype: str, *shapes):
    rng = np.random.default_rng(0)
    if dtype == "int8":
        return [rng.integers(-128, 128, s).astype(np.int8) for s in shapes]
    return [rng.standard_normal(s).astype(np.float32).astype(_np_dtype(dtype)) for s in shapes]


def test_tensorized_matmul_has_the_cube_numerics(npu_target):
    """Each cube dtype: C (in the accumulator dtype) equals numpy's product of the same inputs
    in float32 (int32 for int8), including padded edges (M, N, K not multiples of a tile)."""
    chip = Chip.of(get_profile(npu_target))
    G, M, N, K = 2, 45, 37, 70
    for dtype in chip.cube_dtypes:
        acc = chip.accumulator(dtype)
        plan = plan_tiles(chip, G, M, N, K, dtype, acc)
        func = cube_kernel(plan, (G, M, K), G)
        text = func.script()
        assert all(scope in text for scope in SCOPES.values()), "staging buffers missing"
        a, b = _inputs(dtype, (G, M, K), (G, K, N))
        got = _run(func, a, b, out_shape=(G, M, N), out_dtype=acc)
        if dtype == "int8":
            assert np.array_equal(got, a.astype(np.int32) @ b.astype(np.int32))
        else:
            want = a.astype(np.float32) @ b.astype(np.float32)
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-5, err_msg=dtype)


def test_fp16_output_is_the_rounded_fp32_accumulation():
    chip = Chip.of(get_profile("ascend-910b"))
    plan = plan_tiles(chip, 1, 64, 64, 512, "float16", "float16")
    a, b = _inputs("float16", (1, 64, 512), (1, 512, 64))
    got = _run(cube_kernel(plan, (1, 64, 512), 1), a, b, out_shape=(1, 64, 64),
               out_dtype="float16")
    exact = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float16)
    # fp32 accumulation then one rounding: within one fp16 ulp of the exact result
    ulp = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(got.astype(np.float64) - exact.astype(np.float64)) <= ulp)
    # accumulating in fp16 instead would be visibly worse
    naive = np.zeros((64, 64), np.float16)
    for k in range(512):
        naive = (naive + a[0, :, k:k + 1] * b[0, k:k + 1, :]).astype(np.float16)
    assert np.abs(naive - exact[0]).max() > np.abs(got[0] - exact[0]).max()


@pytest.mark.parametrize("groups, stride, pad, dilation", [(1, 1, 1, 1), (2, 2, 0, 1),
                                                            (8, 1, 2, 2)])
def test_im2col_convolution_matches_torch(groups, stride, pad, dilation):
    import torch

    chip = Chip.of(get_profile("ascend-310p"))
    n, c, h, w, oc, k = 1, 8, 11, 13, 16, 3
    geo = Conv2dGeometry(n, c, h, w, groups, (k, k), (stride, stride), (pad,) * 4,
                         (dilation, dilation))
    oh, ow = geo.out_hw
    x, wt = _inputs("float16", (n, c, h, w), (oc, c // groups, k, k))
    kk, nn = (c // groups) * k * k, oc // groups
    plan = plan_tiles(chip, groups, n * oh * ow, nn, kk, "float16", "float32")
    b = wt.reshape(groups, nn, kk).transpose(0, 2, 1).copy()
    got = _run(cube_kernel(plan, x.shape, groups, geo), x, b, out_shape=(groups, n * oh * ow, nn),
               out_dtype="float32")
    got = got.reshape(groups, n, oh, ow, nn).transpose(1, 0, 4, 2, 3).reshape(n, oc, oh, ow)
    want = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float32)),
                                      torch.from_numpy(wt.astype(np.float32)), stride=stride,
                                      padding=pad, dilation=dilation, groups=groups).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_planned_tiles_fit_every_buffer(npu_target):
    chip = Chip.of(get_profile(npu_target))
    for G, M, N, K in [(1, 1, 1000, 512), (1, 12544, 64, 147), (12, 128, 128, 64),
                       (1, 49, 2048, 4608)]:
        plan = plan_tiles(chip, G, M, N, K, "float16", "float16")
        for level, used in plan.buffer_bytes.items():
            assert used <= chip.buffers[level], (G, M, N, K, level)
        assert plan.fractals == G * -(-M // 16) * -(-N // 16) * -(-K // 16)


def test_requested_tile_that_overflows_is_retiled():
    chip = Chip.of(get_profile("ascend-910b"))
    big = Tile(256, 256, 512, 128)       # L0C would need 256 KB of fp32 accumulators
    plan = plan_tiles(chip, 1, 512, 512, 512, "float16", "float16", big)
    assert plan.tile != big
    assert "overflows L0C 262144 B > 131072 B: re-tiled" in plan.notes[0]
    assert all(plan.buffer_bytes[k] <= v for k, v in chip.buffers.items())
    fits = Tile(64, 64, 128, 64)
    assert plan_tiles(chip, 1, 512, 512, 512, "float16", "float16", fits).tile == fits


def test_chip_where_no_fractal_fits_is_a_clear_error():
    chip = Chip.of(get_profile("ascend-910b"))
    raw = {**chip.raw, "buffers": {**chip.raw["buffers"], "L0C": 512}}
    tiny = dataclasses.replace(chip, raw=raw)
    with pytest.raises(AnychipError, match=r"does not fit the buffers \(L0C 1024 B > 512 B\)"):
        plan_tiles(tiny, 1, 64, 64, 64, "float16", "float16")


def test_capacity_is_checked_on_the_scheduled_tir():
    """A kernel scheduled with a tile past L0C is refused by the TIR check itself."""
    chip = Chip.of(get_profile("ascend-910b"))
    tile = Tile(256, 256, 64, 32)
    use = buffer_use(tile, "float16", "float32", "float16")
    plan = CubePlan(1, 256, 256, 64, "float16", "float32", "float16", (16, 16, 16), tile, use)
    func = cube_kernel(plan, (1, 256, 64), 1)
    with pytest.raises(AnychipError, match=r"needs L0C 262144 B > 131072 B"):
        check_capacity(func, chip, " kernel 'test'")
    ok = plan_tiles(chip, 1, 256, 256, 64, "float16", "float16")
    used = check_capacity(cube_kernel(ok, (1, 256, 64), 1), chip)
    assert used == ok.buffer_bytes


@pytest.mark.parametrize("stride, pads, output_padding, dilation, group",
                         [(2, (1, 1, 1, 1), (1, 1), 1, 1), (3, (0, 2, 1, 0), (0, 2), 1, 1),
                          (1, (1, 1, 1, 1), (0, 0), 2, 1), (2, (1, 0, 0, 1), (1, 0), 1, 2),
                          (2, (0, 0, 0, 0), (0, 0), 1, 6)])
def test_conv_transpose_runs_on_the_cube_and_matches_onnxruntime(stride, pads, output_padding,
                                                                 dilation, group):
    """ONNX ConvTranspose (and a train step's input gradient) becomes the zero-inserted,
    padded, flipped-kernel conv2d of the cube (grouped: the grouped conv2d, channels swapped
    within each group; group 6 is a depthwise upsampling); float32 on 910B compares at fp32
    tolerance."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import anychip

    rng = np.random.default_rng(0)
    per_group = 4 if group == 1 else 3 if group == 2 else 1
    weight = numpy_helper.from_array(
        rng.standard_normal((6, per_group, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[stride, stride],
                            pads=list(pads), output_padding=list(output_padding),
                            dilations=[dilation, dilation], group=group)
    graph = helper.make_graph([node], "deconv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 6, 5, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    report = anychip.verify(model, target="ascend-910b", precision_mode="must_keep_origin_dtype")
    assert report.passed, report.summary()
    art = anychip.compile(model, target="ascend-910b", precision_mode="must_keep_origin_dtype")
    kinds = [k["kind"] for k in art.report["cube_kernels"].values()]
    assert kinds == ["conv2d"]


@pytest.mark.parametrize("a_shape, b_shape", [((7,), (2, 7, 5)), ((3, 4, 7), (7,)), ((7,), (7,)),
                                              ((7,), (7, 9))])
def test_matmul_with_a_vector_operand_runs_on_the_cube(a_shape, b_shape):
    """numpy's 1-D MatMul rules (a vector is a one-row or one-column matrix whose axis leaves
    the result): placement says cube, so the lowering must put it there (it used to leave
    these on the vector unit, where float16 accumulates in float16)."""
    from onnx import TensorProto, helper, numpy_helper

    import anychip

    rng = np.random.default_rng(1)
    b = numpy_helper.from_array(rng.standard_normal(b_shape).astype(np.float32), "b")
    y_shape = list(np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mv",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    report = anychip.verify(model, target="ascend-910b", precision_mode="must_keep_origin_dtype")
    assert report.passed and report.precision == "fp32", report.summary()
    assert report.outputs[0].shape == y_shape
    art = anychip.compile(model, target="ascend-910b")
    assert [k["kind"] for k in art.report["cube_kernels"].values()] == ["matmul"]
