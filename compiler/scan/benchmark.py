"""Benchmark: scan N generated Python files (default 10,000) and report the wall time.

Run: python -m anychip.compiler.scan.benchmark [--files N] [--jobs J]. It is a script, not a
timed test, because its time depends on the machine's load; docs/scan.md records results with
the load they were measured under. The generated files look like training code (imports,
a module, a train loop, ~90 lines) and vary so that one in four has no CUDA at all.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from .walk import scan_path

_HEADER = '''"""Generated file {i} for the anychip scan benchmark."""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
{extra_import}

'''
_MODEL = '''
class Block{i}(nn.Module):
    def __init__(self, dim=256, heads=8):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm(x)).split(c, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return x + self.proj(y)

'''
_CUDA_TRAIN = '''
def train_{i}(steps=10, lr=1e-3):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = Block{i}().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.cuda.amp.GradScaler()
    torch.backends.cudnn.benchmark = True
    for step in range(steps):
        x = torch.randn(8, 64, 256).cuda()
        with torch.cuda.amp.autocast():
            loss = model(x).pow(2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if step % 5 == 0:
            torch.cuda.synchronize()
            print(step, loss.item(), torch.cuda.max_memory_allocated() / 2**20)
    return model
'''
_PLAIN_TRAIN = '''
def train_{i}(steps=10, lr=1e-3):
    model = Block{i}()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(steps):
        x = torch.randn(8, 64, 256)
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 5 == 0:
            print(step, math.sqrt(loss.item()), os.getpid())
    return model
'''
_EXTRA = ["", "import torch.distributed as dist", "from torch.cuda import amp",
          "import torch.cuda as tc"]


def generate(folder: Path, count: int) -> None:
    for i in range(count):
        sub = folder / f"pkg{i // 500}"
        sub.mkdir(exist_ok=True)
        body = _HEADER.format(i=i, extra_import=_EXTRA[i % 4]) + _MODEL.format(i=i)
        body += (_PLAIN_TRAIN if i % 4 == 0 else _CUDA_TRAIN).format(i=i)
        (sub / f"mod_{i}.py").write_text(body)


def _cpu_seconds() -> float:
    import resource

    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="anychip-scan-bench-") as tmp:
        folder = Path(tmp)
        generate(folder, args.files)
        lines = sum(p.read_text().count("\n") for p in list(folder.rglob("*.py"))[:100]) / 100
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        result = scan_path(folder, jobs=args.jobs)
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_before
    # CPU seconds divided by the jobs is the wall time the scan would take with its cores to
    # itself: the honest figure on a shared machine, where wall time measures the neighbours.
    print(f"{result.python_files} Python files (~{lines:.0f} lines each), {args.jobs} job(s), "
          f"{os.cpu_count()} CPU(s), load average {load:.1f} before: wall {seconds:.1f} s "
          f"({result.python_files / seconds:.0f} files/s), CPU {cpu:.1f} s "
          f"(= {cpu / args.jobs:.1f} s on {args.jobs} idle core(s)), "
          f"{len(result.findings)} findings, {len(result.skipped)} skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
