"""cuBLAS/cuDNN dispatch through torch on the cuda family, checked without a GPU: what went to
the library is in report.json and the manifest, the rest still builds through nvcc, and the
option turns it off. The library itself runs for real through a stand-in plug-in on the host
(tests/backends/cpu/test_torch_plugin.py); on a GPU host scripts/gpu_dispatch_check.py."""

from __future__ import annotations

import pytest

import anychip
from anychip.backends.simt.toolchains import nvcc

from tests.backends.cpu.models import conv_net

LIBRARY = "torch-plugin:torch:cuda"


@pytest.mark.slow   # conv net through nvcc: ~8 s on 2 shared cores
def test_conv_net_convolutions_go_to_cudnn_and_the_rest_builds():
    art = anychip.compile(conv_net(), target="nvidia-h100", dispatch=True)
    dispatch = art.report["dispatch"]
    assert dispatch["library"] == LIBRARY
    assert dispatch["calls"] == {"anychip.conv2d_bias_relu": 2,
                                 "anychip.conv2d_bias_residual_relu": 1,
                                 "anychip.matmul_bias": 1}
    assert dispatch["kept_in_tvm"] == {"conv2d": 1}   # dilated, asymmetric padding
    assert art.manifest["runtime"]["libraries"] == [LIBRARY]
    assert art.report["library_dispatch"].startswith(LIBRARY)
    if nvcc() is not None:
        assert art.report["device_code"]["cubin_arch"] == "sm_90"
    plain = anychip.compile(conv_net(), target="nvidia-h100", dispatch=False)
    assert plain.report["dispatch"] is None and plain.manifest["runtime"]["libraries"] == []
    assert plain.report["kernels"] > art.report["kernels"]


def test_tf32_is_really_tf32_with_the_library():
    from tests.backends.gpu.onnx_models import make_softmax_mlp

    art = anychip.compile(make_softmax_mlp(), target="nvidia-h100", precision="tf32",
                          dispatch=True)
    assert art.precision == "tf32" and art.report["dispatch"]["total"] == 2
    assert not [w for w in art.report["warnings"] if "fp32 is used" in w]


def test_fp16_dense_layers_keep_their_epilogues():
    """ToMixedPrecision's fp32-result matmul + cast back is folded into an fp16 matmul, so
    bias and gelu still go to the library with it (attention is not matched at fp16 yet)."""
    from tests.backends.cpu.models import attention_block

    art = anychip.compile(attention_block(), target="nvidia-h100", precision="fp16",
                          dispatch=True)
    assert art.precision == "fp16"
    assert art.report["dispatch"]["calls"] == {"anychip.matmul": 2, "anychip.matmul_bias": 3,
                                               "anychip.matmul_bias_gelu": 1}


def test_cuda_graph_option_captures_tvm_kernels_only():
    from anychip.compiler.errors import AnychipError

    from tests.backends.gpu.onnx_models import make_softmax_mlp

    art = anychip.compile(make_softmax_mlp(), target="nvidia-h100", dispatch=False,
                          cuda_graph=True)
    assert b"vm.builtin.cuda_graph.run_or_capture" in art.library_path.read_bytes()
    with pytest.raises(AnychipError, match="combine it with dispatch=false") as info:
        anychip.compile(make_softmax_mlp(), target="nvidia-h100", dispatch=True,
                        cuda_graph=True)
    assert info.value.exit_code == 2


# ---- on a machine with an NVIDIA GPU and torch with CUDA (skipped elsewhere with the reason) --

@pytest.mark.runs_on("cuda")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
def test_library_calls_run_on_the_gpu_and_match_ort(precision):
    from anychip.compiler.dispatch import get_library

    from tests.backends.cpu.models import attention_block

    for model in (conv_net(), attention_block()):
        report = anychip.verify(model, target="nvidia-h100", precision=precision,
                                dispatch=True)
        assert report.passed, report.summary()
        art = anychip.compile(model, target="nvidia-h100", precision=precision,
                              dispatch=True)
        library = get_library(LIBRARY)
        before = sum(library.calls.values())
        art.run()
        assert sum(library.calls.values()) - before == art.report["dispatch"]["total"] > 0


@pytest.mark.runs_on("cuda")
def test_cuda_graph_artifact_runs_and_matches_ort():
    report = anychip.verify(conv_net(), target="nvidia-h100", dispatch=False, cuda_graph=True)
    assert report.passed, report.summary()

