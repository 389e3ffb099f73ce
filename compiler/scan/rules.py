"""What counts as CUDA lock-in, and its portable form: the scan's knowledge, kept as data.

Each table maps a fully qualified name (after import aliases are resolved) or a package name to
a Rule. Lookups take the longest matching dotted prefix, so `torch.cuda.amp.autocast` wins over
`torch.cuda.amp`, which wins over `torch.cuda`. The portable forms are the device-agnostic APIs
of current PyTorch (torch.accelerator, torch.amp, torch.get_device_module, torch.Stream/Event).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    rule: str
    category: str
    severity: str
    kind: str
    portable: str
    fixable: bool = False


def _r(rule, category, severity, kind, portable, fixable=False) -> Rule:
    return Rule(rule, category, severity, kind, portable, fixable)


ACC = "torch.accelerator"
DEVMOD = "torch.get_device_module(device)"

# torch.cuda.* and friends, by qualified name.
TORCH_API: dict[str, Rule] = {
    # device management
    "torch.cuda.is_available": _r("cuda-is-available", "cuda-device", "port", "torch-cuda-api",
                                  f"{ACC}.is_available()"),
    "torch.cuda.device_count": _r("cuda-device-count", "cuda-device", "port", "torch-cuda-api",
                                  f"{ACC}.device_count()"),
    "torch.cuda.current_device": _r("cuda-current-device", "cuda-device", "port",
                                    "torch-cuda-api", f"{ACC}.current_device_index()"),
    "torch.cuda.set_device": _r("cuda-set-device", "cuda-device", "port", "torch-cuda-api",
                                f"{ACC}.set_device_index(index)"),
    "torch.cuda.device": _r("cuda-device-context", "cuda-device", "port", "torch-cuda-api",
                            f"{ACC}.device_index(index) (context manager)"),
    "torch.cuda.get_device_name": _r("cuda-device-query", "cuda-device", "port",
                                     "torch-cuda-api", f"{DEVMOD}.get_device_name()"),
    "torch.cuda.get_device_properties": _r("cuda-device-query", "cuda-device", "port",
                                           "torch-cuda-api", f"{DEVMOD}.get_device_properties()"),
    "torch.cuda.get_device_capability": _r("cuda-device-query", "cuda-device", "port",
                                           "torch-cuda-api",
                                           f"{ACC}.get_device_capability() (a dict of what the "
                                           f"device supports, not an NVIDIA SM version)"),
    "torch.cuda.is_bf16_supported": _r("cuda-device-query", "cuda-device", "port",
                                       "torch-cuda-api", f"{DEVMOD}.is_bf16_supported()"),
    # streams and events
    "torch.cuda.Stream": _r("cuda-stream", "cuda-stream", "port", "torch-cuda-api",
                            "torch.Stream(device=device)"),
    "torch.cuda.ExternalStream": _r("cuda-stream", "cuda-stream", "blocks", "torch-cuda-api",
                                    "no portable form: a raw cudaStream_t from other CUDA code"),
    "torch.cuda.current_stream": _r("cuda-stream", "cuda-stream", "port", "torch-cuda-api",
                                    f"{ACC}.current_stream()"),
    "torch.cuda.default_stream": _r("cuda-stream", "cuda-stream", "port", "torch-cuda-api",
                                    f"{DEVMOD}.default_stream()"),
    "torch.cuda.stream": _r("cuda-stream", "cuda-stream", "port", "torch-cuda-api",
                            f"{DEVMOD}.stream(s), or {ACC}.set_stream(s)"),
    "torch.cuda.set_stream": _r("cuda-stream", "cuda-stream", "port", "torch-cuda-api",
                                f"{ACC}.set_stream(s)"),
    "torch.cuda.Event": _r("cuda-event", "cuda-event", "port", "torch-cuda-api",
                           "torch.Event(device=device, enable_timing=True)"),
    # memory
    "torch.cuda.memory": _r("cuda-memory", "cuda-memory", "port", "torch-cuda-api",
                            f"{ACC}.memory_allocated()/max_memory_allocated()/empty_cache()/"
                            f"memory_stats() (or {DEVMOD}.<same name>)"),
    "torch.cuda.mem_get_info": _r("cuda-memory", "cuda-memory", "port", "torch-cuda-api",
                                  f"{ACC}.get_memory_info()"),
    # synchronisation
    "torch.cuda.synchronize": _r("cuda-synchronize", "cuda-synchronize", "port",
                                 "torch-cuda-api", f"{ACC}.synchronize()", fixable=True),
    # graphs
    "torch.cuda.CUDAGraph": _r("cuda-graph", "cuda-graph", "blocks", "cuda-graph",
                               "torch.compile(mode='reduce-overhead') where the backend captures "
                               f"graphs, or the vendor's graph API ({ACC}.Graph in recent torch)"),
    "torch.cuda.graph": _r("cuda-graph", "cuda-graph", "blocks", "cuda-graph",
                           "torch.compile(mode='reduce-overhead'), or the vendor's graph capture"),
    "torch.cuda.graphs": _r("cuda-graph", "cuda-graph", "blocks", "cuda-graph",
                            "torch.compile(mode='reduce-overhead'), or the vendor's graph capture"),
    "torch.cuda.make_graphed_callables": _r("cuda-graph", "cuda-graph", "blocks", "cuda-graph",
                                            "torch.compile(mode='reduce-overhead')"),
    "torch.cuda.graph_pool_handle": _r("cuda-graph", "cuda-graph", "blocks", "cuda-graph",
                                       "the vendor's graph capture"),
    # profiling ranges
    "torch.cuda.nvtx": _r("cuda-nvtx", "cuda-nvtx", "port", "nvtx",
                          "torch.profiler.record_function(name) (every backend's profiler)"),
    "torch.cuda.profiler": _r("cuda-nvtx", "cuda-nvtx", "port", "nvtx",
                              "torch.profiler.profile(activities=...)"),
    # random numbers
    "torch.cuda.manual_seed": _r("cuda-rng", "cuda-rng", "port", "torch-cuda-api",
                                 "torch.manual_seed(seed) (seeds every device)"),
    "torch.cuda.manual_seed_all": _r("cuda-rng", "cuda-rng", "port", "torch-cuda-api",
                                     "torch.manual_seed(seed) (seeds every device)"),
    "torch.cuda.seed": _r("cuda-rng", "cuda-rng", "port", "torch-cuda-api", "torch.seed()"),
    "torch.cuda.seed_all": _r("cuda-rng", "cuda-rng", "port", "torch-cuda-api", "torch.seed()"),
    "torch.cuda.initial_seed": _r("cuda-rng", "cuda-rng", "port", "torch-cuda-api",
                                  f"{DEVMOD}.initial_seed()"),
    "torch.cuda.get_rng_state": _r("cuda-rng", "cuda-rng", "port", "torch-cuda-api",
                                   f"{DEVMOD}.get_rng_state()"),
    "torch.cuda.get_rng_state_all": _r("cuda-rng", "cuda-rng", "port", "torch-cuda-api",
                                       f"{DEVMOD}.get_rng_state_all()"),
    "torch.cuda.set_rng_state": _r("cuda-rng", "cuda-rng", "port", "torch-cuda-api",
                                   f"{DEVMOD}.set_rng_state(state)"),
    "torch.cuda.set_rng_state_all": _r("cuda-rng", "cuda-rng", "port", "torch-cuda-api",
                                       f"{DEVMOD}.set_rng_state_all(states)"),
    # mixed precision
    "torch.cuda.amp": _r("cuda-amp", "cuda-amp", "port", "torch-cuda-api",
                         "torch.amp (autocast, GradScaler, custom_fwd/custom_bwd with device_type)"),
    "torch.cuda.amp.autocast": _r("cuda-amp-autocast", "cuda-amp", "port", "torch-cuda-api",
                                  "torch.amp.autocast(device.type, dtype=...)", fixable=True),
    "torch.cuda.amp.GradScaler": _r("cuda-amp-gradscaler", "cuda-amp", "port", "torch-cuda-api",
                                    "torch.amp.GradScaler(device.type)", fixable=True),
    "torch.cuda.amp.custom_fwd": _r("cuda-amp", "cuda-amp", "port", "torch-cuda-api",
                                    "torch.amp.custom_fwd(device_type=device.type)"),
    "torch.cuda.amp.custom_bwd": _r("cuda-amp", "cuda-amp", "port", "torch-cuda-api",
                                    "torch.amp.custom_bwd(device_type=device.type)"),
    # collectives through torch.cuda
    "torch.cuda.nccl": _r("nccl", "nccl", "blocks", "nccl",
                          "torch.distributed collectives on the vendor's backend"),
    "torch.cuda.comm": _r("cuda-comm", "nccl", "port", "nccl",
                          "torch.distributed collectives (broadcast, reduce_add -> all_reduce)"),
    "torch.cuda.jiterator": _r("cuda-jiterator", "cuda-kernel", "blocks", "cuda-kernel",
                               "an elementwise torch expression (torch.compile fuses it)"),
    "torch.distributed.Backend.NCCL": _r("nccl-backend", "nccl", "port", "nccl",
                                         "torch.distributed.get_default_backend_for_device("
                                         "device) (the vendor's collective)"),
    "torch.nn.DataParallel": _r("data-parallel", "data-parallel", "port", "torch-cuda-api",
                                "DistributedDataParallel on the vendor's collective backend"),
    "torch.nn.parallel.DataParallel": _r("data-parallel", "data-parallel", "port",
                                         "torch-cuda-api", "DistributedDataParallel on the "
                                         "vendor's collective backend"),
    # anything else under torch.cuda
    "torch.cuda": _r("torch-cuda", "torch-cuda", "port", "torch-cuda-api",
                     f"{DEVMOD}.<same name>, or the torch.accelerator equivalent"),
    # cuDNN / CUDA backend flags: ignored off NVIDIA, so the intent is lost rather than broken
    "torch.backends.cudnn": _r("cudnn-flag", "cudnn", "info", "cudnn",
                               "off NVIDIA this flag does nothing; for reproducibility use "
                               "torch.use_deterministic_algorithms(True)"),
    "torch.backends.cuda.matmul": _r("cuda-matmul-flag", "cudnn", "info", "cudnn",
                                     "torch.set_float32_matmul_precision('high') (all backends)"),
    "torch.backends.cuda": _r("cuda-backend-flag", "cudnn", "info", "cudnn",
                              "torch.nn.attention.sdpa_kernel(...) for attention backends; other "
                              "flags do nothing off NVIDIA"),
    # C++/CUDA extensions built from Python
    "torch.utils.cpp_extension.CUDAExtension": _r(
        "cuda-extension", "cuda-extension", "blocks", "cuda-kernel",
        "rewrite the kernel as torch ops (then export this module with anychip), as a Triton "
        "kernel where the family has Triton, or in the vendor's kernel language"),
    "torch.utils.cpp_extension.BuildExtension": _r(
        "build-extension", "cuda-extension", "info", "build",
        "builds C++ (and CUDA) extensions: check its ext_modules for CUDAExtension"),
    "torch.utils.cpp_extension.CUDA_HOME": _r(
        "cuda-home", "cuda-extension", "port", "cuda-kernel",
        "test for the accelerator with torch.accelerator, not for a CUDA toolkit"),
}

# Functions whose "cuda" argument is a device type rather than a device (amp family).
AMP_DEVICE_TYPE_CALLS = {"torch.autocast", "torch.amp.autocast", "torch.amp.GradScaler",
                         "torch.amp.custom_fwd", "torch.amp.custom_bwd",
                         "torch.amp.autocast_mode.autocast", "torch.get_autocast_dtype",
                         "torch.is_autocast_available"}

# Imports of CUDA-only libraries, by module prefix.
LIBRARIES: dict[str, Rule] = {
    "apex": _r("lib-apex", "cuda-library", "blocks", "cuda-library",
               "torch.amp for apex.amp, torch.nn.LayerNorm/RMSNorm for its fused norms, "
               "torch.optim.AdamW(fused=...) for its optimizers, torch DDP for apex.parallel"),
    "flash_attn": _r("lib-flash-attn", "cuda-library", "blocks", "cuda-library",
                     "torch.nn.functional.scaled_dot_product_attention (then export this module "
                     "with anychip)"),
    "xformers": _r("lib-xformers", "cuda-library", "blocks", "cuda-library",
                   "torch.nn.functional.scaled_dot_product_attention (attn_bias -> attn_mask)"),
    "bitsandbytes": _r("lib-bitsandbytes", "cuda-library", "blocks", "cuda-library",
                       "torch.optim.AdamW for 8-bit optimizers; weight-only int8/int4 through "
                       "the vendor's quantisation or anychip's int8 precision"),
    "deepspeed.ops": _r("lib-deepspeed-ops", "cuda-library", "blocks", "cuda-library",
                        "torch.optim (fused=...) and torch ops; deepspeed's accelerator "
                        "abstraction picks vendor kernels where they exist"),
    "deepspeed": _r("lib-deepspeed", "cuda-library", "info", "cuda-library-portable",
                    "deepspeed.accelerator.get_accelerator() instead of torch.cuda calls"),
    "cupy": _r("lib-cupy", "cuda-library", "blocks", "cuda-library", "numpy or torch tensors"),
    "cupyx": _r("lib-cupy", "cuda-library", "blocks", "cuda-library", "numpy/scipy or torch"),
    "pycuda": _r("lib-pycuda", "cuda-library", "blocks", "cuda-library",
                 "torch tensors and ops; kernels as Triton or vendor kernels"),
    "tensorrt": _r("lib-tensorrt", "cuda-library", "blocks", "cuda-library",
                   "export this module with anychip (anychip compile MODEL --target T)"),
    "torch_tensorrt": _r("lib-tensorrt", "cuda-library", "blocks", "cuda-library",
                         "export this module with anychip (anychip compile MODEL --target T)"),
    "nvidia.dali": _r("lib-dali", "cuda-library", "blocks", "cuda-library",
                      "torch.utils.data.DataLoader with torchvision.transforms.v2"),
    "nvidia": _r("lib-nvidia", "cuda-library", "blocks", "cuda-library",
                 "the vendor's equivalent library, or plain torch"),
    "cuda": _r("lib-cuda-python", "cuda-library", "blocks", "cuda-library",
               "torch.accelerator / torch.Stream / torch.Event instead of the CUDA driver API"),
    "numba.cuda": _r("lib-numba-cuda", "cuda-library", "blocks", "cuda-library",
                     "torch ops, or Triton where the family has it"),
    "pynvml": _r("lib-pynvml", "cuda-library", "port", "cuda-library-portable",
                 f"{ACC}.memory_allocated()/get_memory_info() or the vendor's SMI"),
    "transformer_engine": _r("lib-transformer-engine", "cuda-library", "blocks", "cuda-library",
                             "torch.nn layers with torch.amp"),
    "cudf": _r("lib-rapids", "cuda-library", "blocks", "cuda-library", "pandas / polars"),
    "cuml": _r("lib-rapids", "cuda-library", "blocks", "cuda-library", "scikit-learn"),
    "triton": _r("triton-import", "triton", "info", "triton",
                 "Triton kernels need a Triton backend for the family (see --target)"),
}

# Requirement names (PEP 503-normalised) of packages that only exist for NVIDIA GPUs.
REQUIREMENTS: dict[str, Rule] = {
    name: _r(f"req-{name}", "requirement", severity, "cuda-library", portable)
    for name, severity, portable in [
        ("flash-attn", "blocks", "torch's scaled_dot_product_attention"),
        ("xformers", "blocks", "torch's scaled_dot_product_attention"),
        ("bitsandbytes", "blocks", "torch.optim / the vendor's quantisation"),
        ("apex", "blocks", "torch.amp and torch.nn fused layers"),
        ("tensorrt", "blocks", "anychip compile"),
        ("torch-tensorrt", "blocks", "anychip compile"),
        ("pycuda", "blocks", "torch"),
        ("cuda-python", "blocks", "torch.accelerator"),
        ("cuda-bindings", "blocks", "torch.accelerator"),
        ("cupy", "blocks", "numpy or torch"),
        ("transformer-engine", "blocks", "torch.nn with torch.amp"),
        ("pynvml", "port", "torch.accelerator memory APIs"),
        ("nvidia-ml-py", "port", "torch.accelerator memory APIs"),
        ("onnxruntime-gpu", "port", "onnxruntime with the vendor's execution provider"),
        ("triton", "info", "a Triton backend for the family (see --target)"),
        ("deepspeed", "info", "deepspeed's accelerator abstraction"),
    ]
}
# Prefixes and suffixes of CUDA-only requirement names.
REQUIREMENT_PREFIXES = {"nvidia-": "the vendor's runtime libraries",
                        "cupy-cuda": "numpy or torch", "tensorrt-": "anychip compile"}
REQUIREMENT_SUFFIXES = ("-cu11", "-cu12", "-cu13")


def lookup(table: dict[str, Rule], qualname: str) -> tuple[str, Rule] | None:
    """The longest dotted prefix of `qualname` in `table`, with its rule."""
    parts = qualname.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in table:
            return key, table[key]
    return None


def torch_cuda_rule(qualname: str) -> tuple[str, Rule] | None:
    """The rule for a torch.cuda.* / torch.backends.* / cpp_extension name, memory grouped."""
    found = lookup(TORCH_API, qualname)
    if found and found[0] == "torch.cuda" and _is_memory_api(qualname):
        return "torch.cuda.memory", TORCH_API["torch.cuda.memory"]
    return found


_MEMORY_WORDS = ("memory", "empty_cache", "caching_allocator", "mem_get_info")


def _is_memory_api(qualname: str) -> bool:
    name = qualname.split(".")[2] if qualname.count(".") >= 2 else ""
    return any(w in name for w in _MEMORY_WORDS)
