"""What each vendor's PyTorch stack offers in place of CUDA: the data `--target` judges with.

Keyed by the profile's `vendor` field (backends/profiles/*.yaml), so a new chip of a known
vendor needs nothing here, and the scan never branches on a family name. Dtype judgements do
not live here: they come from the profile itself (its `dtypes` and `float64` fields).

Fields:
  native_cuda:   the stack *is* CUDA (nothing CUDA-specific is lock-in there)
  torch:         how PyTorch runs on it (the package and device type)
  answers_torch_cuda: the vendor's torch build answers `torch.cuda` / device "cuda"
  collective:    the torch.distributed backend; nccl_name_works: it answers to "nccl"
  triton:        the Triton distribution for the chip, or None where there is none known
  kernels:       how a CUDA kernel is ported; kernels_port: a mechanical path exists
  uncertain:     fields not confirmed by a primary source (treat as a hint)
"""

from __future__ import annotations

ECOSYSTEMS: dict[str, dict] = {
    "NVIDIA": {
        "native_cuda": True, "torch": "torch (CUDA build), device 'cuda'",
        "answers_torch_cuda": True, "collective": "NCCL", "nccl_name_works": True,
        "triton": "triton", "kernels": "CUDA", "kernels_port": True, "uncertain": [],
    },
    "Huawei": {
        "native_cuda": False, "torch": "torch_npu, device 'npu'",
        "answers_torch_cuda": False, "collective": "HCCL (backend 'hccl')",
        "nccl_name_works": False, "triton": "triton-ascend",
        "kernels": "Ascend C custom operators (registered through torch_npu)",
        "kernels_port": False, "uncertain": [],
    },
    "Hygon": {
        "native_cuda": False, "torch": "PyTorch built on DTK (ROCm/HIP), device 'cuda'",
        "answers_torch_cuda": True, "collective": "RCCL behind the 'nccl' backend name",
        "nccl_name_works": True, "triton": "Triton's AMD backend built for DTK",
        "kernels": "HIP: torch's cpp_extension hipifies CUDA sources on a ROCm-based build",
        "kernels_port": True, "uncertain": ["triton"],
    },
    "MetaX": {
        "native_cuda": False, "torch": "mcPytorch (MACA), shows up as torch.cuda",
        "answers_torch_cuda": True, "collective": "MetaX's NCCL-compatible library",
        "nccl_name_works": True, "triton": None,
        "kernels": "MACA (CUDA-like, mxcc)", "kernels_port": True,
        "uncertain": ["nccl_name_works", "triton", "kernels_port"],
    },
    "Iluvatar CoreX": {
        "native_cuda": False, "torch": "CoreX PyTorch, device 'cuda'",
        "answers_torch_cuda": True, "collective": "CoreX's NCCL-compatible library",
        "nccl_name_works": True, "triton": None,
        "kernels": "CoreX (CUDA-compatible toolchain)", "kernels_port": True,
        "uncertain": ["nccl_name_works", "triton", "kernels_port"],
    },
    "Moore Threads": {
        "native_cuda": False, "torch": "torch_musa, device 'musa'",
        "answers_torch_cuda": False, "collective": "MCCL (backend 'mccl')",
        "nccl_name_works": False, "triton": None,
        "kernels": "MUSA (CUDA-like, mcc; the musify porting tool)", "kernels_port": True,
        "uncertain": ["triton"],
    },
    "Biren": {
        "native_cuda": False, "torch": "no public PyTorch backend known (SUPA; Paddle plugin)",
        "answers_torch_cuda": False, "collective": "none known", "nccl_name_works": False,
        "triton": None, "kernels": "SUPA (own language)", "kernels_port": False,
        "uncertain": ["torch", "collective"],
    },
    "host": {
        "native_cuda": False, "torch": "torch (CPU), device 'cpu'",
        "answers_torch_cuda": False, "collective": "Gloo (backend 'gloo')",
        "nccl_name_works": False, "triton": None, "kernels": "C++ (CppExtension)",
        "kernels_port": False, "uncertain": [],
    },
}

UNKNOWN = {"native_cuda": False, "torch": "unknown", "answers_torch_cuda": False,
           "collective": "the vendor's", "nccl_name_works": False, "triton": None,
           "kernels": "the vendor's kernel language", "kernels_port": False, "uncertain": []}


def ecosystem(vendor: str) -> dict:
    return ECOSYSTEMS.get(vendor, UNKNOWN)
