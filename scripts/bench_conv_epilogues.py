"""python scripts/bench_conv_epilogues.py MODEL [ROUNDS]: compile zoo:MODEL (or an .onnx
path) for cpu in three states of the conv epilogue work of issue 21, in one process, then time
them and ONNX Runtime interleaved, round by round, and print the medians and ratios to ORT:

- before: oneDNN convolutions with relu/gelu epilogues only, relax.clip without a layout rule;
- nogemm: sigmoid / SiLU / HardSwish / clip epilogues, squeeze-excite convs through oneDNN;
- se: squeeze-excite's 1x1 convs of a 1x1 image as GEMMs (torch.addmm), other 1x1 convs
  through oneDNN's convolution;
- now: the library as it is (also stride-1 1x1 convs of larger NHWC images as oneDNN's
  linear on the [N*H*W, C] matrix).

`python scripts/bench_conv_epilogues.py MODEL ROUNDS se,now` times only the states named.

The earlier states are the library patched in this process (nothing on disk changes); the
compile cache is off. Interleaving makes the ratios comparable on a loaded machine, where
single `anychip bench` runs swing by +-30% (docs/performance.md).
"""

from __future__ import annotations

import os
import sys
import time

os.environ["ANYCHIP_NO_CACHE"] = "1"

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import anychip  # noqa: E402
from anychip import models  # noqa: E402
from anychip.backends.cpu import backend, torch_library  # noqa: E402
from anychip.compiler.inputs import random_inputs  # noqa: E402
import onnxruntime as ort  # noqa: E402

name = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
wanted = sys.argv[3].split(",") if len(sys.argv) > 3 else ["before", "nogemm", "se", "now"]
proto = onnx.load(name) if name.endswith(".onnx") else models.build(name).proto
acts, gemm, clip = (torch_library.CONV_ACTIVATIONS, torch_library._gemm_kind,
                    backend._unary_ops_keep_layout)
states = {  # state -> (conv activations, gemm kinds, clip keeps its layout)
    "before": ({"relu": "relu", "gelu": "gelu"}, lambda m, d: "", lambda: None),
    "nogemm": (acts, lambda m, d: "", clip),
    "se": (acts, lambda m, d: "1" if gemm(m, d) == "1" else "", clip),
    "now": (acts, gemm, clip),
}
arts = {}
for state in wanted:
    (torch_library.CONV_ACTIVATIONS, torch_library._gemm_kind,
     backend._unary_ops_keep_layout) = states[state]
    arts[state] = anychip.compile(proto, target="cpu")
torch_library.CONV_ACTIVATIONS, torch_library._gemm_kind, backend._unary_ops_keep_layout = (
    acts, gemm, clip)
feed = random_inputs(next(iter(arts.values())).inputs, 0)
so = ort.SessionOptions()
so.intra_op_num_threads = len(os.sched_getaffinity(0))
sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
runs = {k: (lambda a=a: a.run(feed)) for k, a in arts.items()}
runs["ort"] = lambda: sess.run(None, feed)
outs = {k: list(f().values())[0] if k != "ort" else f()[0] for k, f in runs.items()}
for k, o in outs.items():
    print(k, "max abs vs ort", float(np.abs(o - outs["ort"]).max()))
for _ in range(3):
    for f in runs.values():
        f()
times = {k: [] for k in runs}
order = list(runs)
for r in range(rounds):   # rotating order: ORT's pool spins after its run, slowing the next
    for k in order[r % len(order):] + order[:r % len(order)]:
        t = time.perf_counter()
        runs[k]()
        times[k].append((time.perf_counter() - t) * 1e3)
med = {k: float(np.median(v)) for k, v in times.items()}
print(name, "load", os.getloadavg(), "rounds", rounds)
for k, m in med.items():
    print(f"  {k:7s} median {m:8.2f} ms  min {min(times[k]):8.2f}  / ort {m / med['ort']:.2f}x")
