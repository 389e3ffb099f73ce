"""The analyser on fixtures: every category, with the exact expected findings.

The fixture tree (fixtures/mixed) mixes every pattern the issue names; each expected tuple
below was checked by hand against the fixture's source line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from anychip.compiler.scan.python_source import analyse
from anychip.compiler.scan.walk import scan_path

FIXTURES = Path(__file__).parent / "fixtures"

EXPECTED = [
    ("csrc/kernel.cu", 4, "cuda-source"),
    ("csrc/ops.cpp", 3, "cuda-include"),
    ("kernels.py", 3, "triton-import"),
    ("kernels.py", 4, "triton-import"),
    ("kernels.py", 8, "triton-kernel"),
    ("kernels.py", 13, "cuda-extension-jit"),
    ("libs.py", 3, "lib-apex"),
    ("libs.py", 4, "lib-bitsandbytes"),
    ("libs.py", 5, "lib-cupy"),
    ("libs.py", 6, "lib-pycuda"),
    ("libs.py", 7, "lib-tensorrt"),
    ("libs.py", 8, "lib-xformers"),
    ("libs.py", 9, "lib-cuda-python"),
    ("libs.py", 10, "lib-deepspeed-ops"),
    ("libs.py", 11, "lib-dali"),
    ("libs.py", 13, "lib-deepspeed"),
    ("model.py", 4, "lib-flash-attn"),
    ("model.py", 7, "plain-module"),
    ("model.py", 18, "dot-cuda"),
    ("pyproject.toml", 4, "req-xformers"),
    ("pyproject.toml", 7, "req-tensorrt"),
    ("requirements.txt", 3, "req-cuda-wheel"),
    ("requirements.txt", 4, "req-cuda-wheel"),
    ("requirements.txt", 5, "req-flash-attn"),
    ("requirements.txt", 6, "req-nvidia"),
    ("requirements.txt", 7, "req-cupy-cuda"),
    ("requirements.txt", 8, "req-bitsandbytes"),
    ("setup.py", 8, "cuda-extension"),
    ("setup.py", 9, "build-extension"),
    ("setup.py", 10, "req-flash-attn"),
    ("train.py", 12, "cuda-device-string"),
    ("train.py", 14, "cuda-device-string"),
    ("train.py", 15, "cuda-device-string"),
    ("train.py", 16, "cuda-device-string"),
    ("train.py", 16, "cuda-is-available"),
    ("train.py", 21, "cuda-device-string"),
    ("train.py", 24, "cuda-device-flow"),
    ("train.py", 25, "dot-cuda"),
    ("train.py", 26, "cuda-amp-autocast"),
    ("train.py", 28, "cuda-amp-gradscaler"),
    ("train.py", 30, "cuda-synchronize"),
    ("train.py", 36, "cuda-device-string"),
    ("train.py", 37, "cudnn-flag"),
    ("train.py", 38, "cuda-matmul-flag"),
    ("train.py", 39, "nccl-backend"),
    ("train.py", 40, "cuda-set-device"),
    ("train.py", 41, "cuda-device-count"),
    ("train.py", 41, "cuda-memory"),
    ("train.py", 42, "cuda-stream"),
    ("train.py", 43, "cuda-event"),
    ("train.py", 44, "cuda-graph"),
    ("train.py", 45, "cuda-nvtx"),
    ("train.py", 46, "cuda-rng"),
    ("train.py", 47, "dtype-float64"),
    ("train.py", 47, "cuda-device-flow"),
    ("train.py", 47, "dtype-bfloat16"),
    ("train.py", 48, "cuda-device-flow"),
    ("train.py", 49, "amp-device-type"),
    ("train.py", 51, "cuda-device-branch"),
]


def test_mixed_fixture_exact_findings():
    result = scan_path(FIXTURES / "mixed")
    got = [(f.path, f.line, f.rule) for f in result.findings]
    assert sorted(got) == sorted(EXPECTED)
    assert result.skipped == [] and result.files == 10  # host_only.cpp read, nothing found


def test_every_finding_has_location_code_and_portable_form():
    result = scan_path(FIXTURES / "mixed")
    categories = {f.category for f in result.findings}
    assert categories >= {"device-string", "cuda-amp", "cuda-synchronize", "cuda-memory",
                          "cuda-stream", "cuda-event", "cuda-graph", "cuda-nvtx", "cuda-device",
                          "cuda-rng", "cudnn", "nccl", "cuda-extension", "cuda-source",
                          "triton", "cuda-library", "requirement", "dtype", "export"}
    for f in result.findings:
        assert f.line >= 1 and f.column >= 1 and f.code and f.portable
        assert f.severity in ("blocks", "port", "info")
    sync = next(f for f in result.findings if f.rule == "cuda-synchronize")
    assert (sync.column, sync.code, sync.api) == (9, "tc.synchronize()", "torch.cuda.synchronize")
    assert "torch.accelerator.synchronize()" in sync.portable


def _rules(source: str) -> list[tuple[int, str]]:
    return [(f.line, f.rule) for f in analyse("x.py", source)]


@pytest.mark.parametrize("source, expected", [
    ("import torch.cuda as tc\ntc.synchronize()\n", [(2, "cuda-synchronize")]),
    ("from torch import cuda\ncuda.synchronize()\n", [(2, "cuda-synchronize")]),
    ("from torch.cuda import synchronize as s\ns()\n", [(2, "cuda-synchronize")]),
    ("import torch\ntc = torch.cuda\ntc.empty_cache()\n", [(2, "torch-cuda"), (3, "cuda-memory")]),
    ("from torch.cuda import amp\nwith amp.autocast():\n    pass\n",
     [(2, "cuda-amp-autocast")]),
    # a local module named cuda, and "cuda" inside free text, are not CUDA lock-in
    ("from .cuda import synchronize\nsynchronize()\nprint('runs on cuda too')\n", []),
    ("def f(device='cuda'):\n    return x.to(device)\n",
     [(1, "cuda-device-string"), (2, "cuda-device-flow")]),
    ("import torch\nd = 'cuda:{}'.format(r)\ntorch.device(d)\n",
     [(2, "cuda-device-string"), (3, "cuda-device-flow")]),
    ("m = AutoModel.from_pretrained('x', device_map='cuda')\n", [(1, "cuda-device-string")]),
    ("import torch\ndev = torch.device('cpu')\nx.to(dev)\n", []),
    ("import torch\ndist = torch.distributed\ndist.init_process_group('cpu:gloo,cuda:nccl')\n",
     [(3, "nccl-backend")]),
    ("import os\nos.environ['CUDA_VISIBLE_DEVICES'] = '0'\n", [(2, "cuda-visible-devices")]),
    ("from numba import cuda\n", [(1, "lib-numba-cuda")]),
    # an optional import (try/except ImportError) is a port, not a blocker
    ("try:\n    import flash_attn\nexcept ImportError:\n    flash_attn = None\n",
     [(2, "lib-flash-attn")]),
    ("import torch\nif x.is_cuda:\n    subprocess.run(['nvidia-smi'])\n",
     [(2, "is-cuda"), (3, "nvidia-smi")]),
    (("import os, torch\nos.environ['NCCL_DEBUG'] = 'INFO'\n"
     "torch.set_default_tensor_type('torch.cuda.FloatTensor')\n"),
     [(2, "nccl-env"), (3, "torch-cuda")]),
    (("import torch.distributed as dist\nimport torch.nn as nn\n"
     "dist.init_process_group(dist.Backend.NCCL)\nm = nn.DataParallel(m)\n"),
     [(3, "nccl-backend"), (4, "data-parallel")]),
    # no CUDA word at all: a module with forward() is a plain graph to export
    ("from torch import nn\nclass M(nn.Module):\n    def forward(self, x):\n        return x\n",
     [(2, "plain-module")]),
    ("import torch\nx = torch.ones(2, dtype=torch.float64)\ny = f'cuda:{torch.cuda.current_device()}'\n",
     [(2, "dtype-float64"), (3, "cuda-device-string"), (3, "cuda-current-device")]),
    ("import torch\nx = torch.cuda.FloatTensor(3)\n", [(2, "torch-cuda")]),
    ("import torch\nwith torch.cuda.device(1):\n    pass\n", [(2, "cuda-device-context")]),
    ("import torch\ng = torch.cuda.graph(cg)\n", [(2, "cuda-graph")]),
    ("from torch.utils import cpp_extension\ncpp_extension.load('e', ['k.cu'])\n",
     [(2, "cuda-extension-jit")]),
])
def test_aliases_and_device_flow(source, expected):
    assert _rules(source) == expected


def test_optional_import_is_port_with_reason():
    found = analyse("x.py", "try:\n    import xformers.ops\nexcept (ImportError, OSError):\n"
                            "    pass\nimport apex\n")
    assert [(f.line, f.rule, f.severity) for f in found] == [
        (2, "lib-xformers", "port"), (5, "lib-apex", "blocks")]
    assert "inside try/except ImportError" in found[0].message
