"""The generic torch device plug-in library (compiler/dispatch/torch_device.py) through a
stand-in vendor plug-in on the host: the same Library class the cuda family uses for
cuBLAS/cuDNN, selected by 'module:device', runs for real on torch's cpu device and matches
ONNX Runtime; a plug-in that is not installed is one line and exit 3 at run time."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import anychip
from anychip.compiler.dispatch import get_library
from anychip.compiler.errors import AnychipError, NotExecutable
from anychip.compiler.inputs import random_inputs
from anychip.compiler.tolerances import compare, tolerance_for

from .models import attention_block, conv_net

STAND_IN = "tests.backends.cpu.fake_vendor_torch"
PLUGIN = f"{STAND_IN}:cpu"


def _against_ort(model, art):
    import onnxruntime as ort

    feed = random_inputs(art.inputs, 0)
    got = list(art.run(feed).values())
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    want = session.run(None, feed)
    for g, w in zip(got, want):
        check = compare(g, w, tolerance_for("fp32", w.dtype))
        assert check.passed, check
        assert np.abs(w).max() > 1e-2


@pytest.mark.parametrize("model,calls", [
    (conv_net, {"anychip.conv2d_bias_relu": 2, "anychip.conv2d_bias_residual_relu": 1,
                "anychip.matmul_bias": 1}),
    (attention_block, None),
])
def test_stand_in_plugin_runs_the_library_and_matches_ort(model, calls):
    onnx_model = model()
    art = anychip.compile(onnx_model, target="cpu", torch_plugin=PLUGIN)
    name = f"torch-plugin:{PLUGIN}"
    dispatch = art.report["dispatch"]
    assert dispatch["library"] == name
    assert art.manifest["runtime"]["libraries"] == [name]
    if calls is not None:
        assert dispatch["calls"] == calls
        # the dilated conv with asymmetric padding stays in a TVM kernel, and says so
        assert dispatch["kept_in_tvm"] == {"conv2d": 1}
    else:   # dense projections with bias / gelu / residual; softmax(Q.K^T / c).V as SDPA
        assert dispatch["calls"] == {"anychip.attention": 1, "anychip.matmul_bias": 1,
                                     "anychip.matmul_bias_gelu": 1,
                                     "anychip.matmul_bias_residual": 2}
    library = get_library(name)
    before = sum(library.calls.values())
    _against_ort(onnx_model, art)
    assert sum(library.calls.values()) - before == dispatch["total"]
    assert STAND_IN in sys.modules and sys.modules[STAND_IN].IMPORTS == [STAND_IN]


def test_missing_plugin_is_one_line_exit_3():
    art = anychip.compile(conv_net(), target="cpu", torch_plugin="no_such_vendor_torch:npu")
    assert art.manifest["runtime"]["libraries"] == ["torch-plugin:no_such_vendor_torch:npu"]
    with pytest.raises(NotExecutable, match="does not import") as info:
        art.run()
    assert info.value.exit_code == 3 and "\n" not in str(info.value)


def test_plugin_without_a_device_is_exit_3():
    """torch imports but has no such device: what a CUDA artifact meets on a host whose
    torch is a CPU-only build."""
    art = anychip.compile(conv_net(), target="cpu", torch_plugin="torch:nosuchdevice")
    with pytest.raises(NotExecutable, match="torch has no 'nosuchdevice' device") as info:
        art.run()
    assert info.value.exit_code == 3


def test_malformed_plugin_is_exit_2():
    with pytest.raises(AnychipError, match="give module:device") as info:
        anychip.compile(conv_net(), target="cpu", torch_plugin="torch_npu")
    assert info.value.exit_code == 2


def test_fp32_calls_turn_cudnn_tf32_off_for_the_call_only():
    """cuDNN allows TF32 by default: an fp32 artifact's call runs in full fp32 and the process's
    own setting is back after it (the flags exist in CPU builds of torch too)."""
    import torch

    from anychip.compiler.dispatch.torch_device import _precision

    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with _precision(torch, "cuda", False):
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        with _precision(torch, "cuda", True):
            assert torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32 = before


def test_half_operands_widen_into_a_float32_result():
    """What --precision fp16 leaves in the graph (fp16 operands, float32 result): the
    library multiplies in fp16 and runs the epilogue in float32 into TVM's buffer; and the
    attention call is SDPA with the scale the compiler folded. torch tensors speak DLPack
    themselves, so the packed functions run here as lib.so would call them."""
    import torch

    from anychip.compiler.dispatch.torch_device import TorchDeviceLibrary, _spec

    lib, tol = TorchDeviceLibrary("torch", "cpu"), tolerance_for("fp16", np.float32)
    torch.manual_seed(0)
    a, b = torch.randn(4, 8).half(), torch.randn(8, 6).half()
    bias, res, out = torch.randn(6), torch.randn(4, 6), torch.empty(4, 6)
    lib._matmul(a, b, bias, res, _spec(e=("bias", "residual", "gelu"), tf32=0), out)
    want = torch.nn.functional.gelu(a.float() @ b.float() + bias + res)
    assert compare(out.numpy(), want.numpy(), tol).passed
    x, w, cb = torch.randn(1, 3, 8, 8).half(), torch.randn(4, 3, 3, 3).half(), torch.randn(4)
    out = torch.empty(1, 4, 8, 8)
    lib._conv2d(x, w, cb, _spec(layout="NCHW", s=[1, 1], p=[1, 1], d=[1, 1], g=1,
                                e=("bias", "relu"), tf32=0), out)
    want = torch.relu(torch.nn.functional.conv2d(x.float(), w.float(), cb, 1, 1))
    assert compare(out.numpy(), want.numpy(), tol).passed and out.abs().max() > 0.1
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    out = torch.empty(1, 2, 5, 4)
    lib._attention(q, k.transpose(-2, -1).contiguous(), v, _spec(scale=(0.5).hex(), tf32=0), out)
    want = torch.softmax(q @ k.transpose(-2, -1) * 0.5, -1) @ v
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
