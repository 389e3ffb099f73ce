"""Every resource limit anychip applies to untrusted input, in one place.

A model, an .npz or a manifest is data from someone else: a few hundred bytes can ask for
terabytes (a static dim of 2**31, forty tensors sharing one sparse external file, a zip bomb)
or for hours (a huge node count through a quadratic pass). Each limit below is checked before
the memory or time is spent, and a model over a limit is refused with one line (exit 2)
naming the tensor or file. Each can be raised with the environment variable next to it; the
defaults admit every model of the zoo and real LLM checkpoints up to the host's memory.
docs/security.md lists them with what they protect against.
"""

from __future__ import annotations

import os
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        return default
    return value if value > 0 else default


def host_memory_bytes() -> int:
    """Physical memory of this machine (the cgroup's limit when it is lower)."""
    total = 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


GiB = 1 << 30
# a model file is one protobuf; the library cannot parse one over 2 GiB
MAX_MODEL_FILE_BYTES = 2**31 - 1
# nodes over all graphs: a 100k-node chain compiles (docs/security.md has the figure)
MAX_NODES = _env_int("ANYCHIP_MAX_NODES", 1_000_000)
# one dimension, and the elements of one tensor: TVM indexes with int64 but many kernels
# (and libraries) use int32 offsets, so a tensor of 2**31 elements and more is refused
MAX_DIM = 2**31 - 1
MAX_STATIC_ELEMENTS = _env_int("ANYCHIP_MAX_ELEMENTS", 2**31 - 1)
# onnx's shape inference with data propagation costs time linear in the elements of the
# tensors it meets (an Add of two [1e7] inputs: 14 s, [1.5e9]: hours); it only matters for
# small shape-computing tensors, so it is turned off for models with a larger declared tensor
DATA_PROP_MAX_ELEMENTS = _env_int("ANYCHIP_DATA_PROP_MAX_ELEMENTS", 1 << 20)
# one tensor's bytes (initializer or external data)
MAX_TENSOR_BYTES = _env_int("ANYCHIP_MAX_TENSOR_BYTES", 16 * GiB)
# all weights together (inline and external): compile holds a few copies of them
MAX_WEIGHT_BYTES = _env_int("ANYCHIP_MAX_WEIGHT_BYTES", max(host_memory_bytes() // 2, GiB))
# the memory one node needs (its inputs and outputs alive at once), checked against the host
# or the target profile's memory: a model that cannot fit is refused before TVM builds it
MAX_ACTIVATION_BYTES = _env_int("ANYCHIP_MAX_ACTIVATION_BYTES", host_memory_bytes() // 2)
# an .npz member inflated (zip bombs), and all members together
MAX_NPZ_MEMBER_BYTES = _env_int("ANYCHIP_MAX_NPZ_BYTES", max(host_memory_bytes() // 4, GiB))
MAX_NPZ_MEMBERS = 10_000
# manifest.json is small; a huge one is an attack on the JSON parser
MAX_MANIFEST_BYTES = 64 << 20
# the CLI's compile runs in a child process under this ceiling on its heap (RLIMIT_DATA), so
# a blow-up inside TVM (std::bad_alloc) is a one-line error instead of an abort or the OOM
# killer taking the machine; a normal compile of a zoo model stays well under 8 GiB
COMPILE_MEMORY_BYTES = _env_int("ANYCHIP_COMPILE_MEMORY_BYTES",
                                max(host_memory_bytes() * 3 // 4, 4 * GiB))
