"""Where one compiled train step's time goes, per kind of VM call (`bench --profile` times
inference only).

    python scripts/profile_train_step.py [--model bert] [--steps 5] [--no-transposed-views]
                                         [--parallel]

Compiles the zoo model's train step as `anychip bench --train` does (token_cross_entropy or
cross_entropy by the output's rank, AdamW lr 1e-3, the zoo's example batch), times plain steps,
then sets the Relax VM instrument on the trainer's VM (compiler/profiler.py's method) and sums
every call per kind (library GEMM, TVM compute kernel, layout transform, runtime builtin) and
per name. --no-transposed-views turns off the cpu library's transposed operands (and so the
rewrite of transposed products) to compare with the step before that change. The load average
is printed: on a shared machine compare runs taken back to back. docs/performance.md records
results.
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bert", help="zoo name (default bert)")
    parser.add_argument("--steps", type=int, default=5, help="instrumented steps")
    parser.add_argument("--top", type=int, default=25, help="calls listed by name")
    parser.add_argument("--no-transposed-views", action="store_true")
    parser.add_argument("--parallel", action="store_true",
                        help="TVM's own kernels on all cores (the cpu option parallel=True)")
    args = parser.parse_args()

    from anychip.backends.cpu.torch_library import TorchCpuLibrary
    from anychip.compiler.dispatch import choose_openmp_wait_policy

    TorchCpuLibrary.transposed_operands = not args.no_transposed_views
    print(f"load average {os.getloadavg()[0]:.2f}; OpenMP: {choose_openmp_wait_policy()}")
    import torch

    from anychip import models as zoo
    from anychip.compiler.bench_train import _labels
    from anychip.compiler.profiler import _kind
    from anychip.compiler.training import compile_training
    from anychip.compiler.training.optim import AdamW

    built = zoo.build(args.model)
    module = built.torch_module.train()
    inputs = tuple(built.example_inputs)
    with torch.no_grad():
        shape = tuple(module(*inputs).shape)
    loss = "cross_entropy" if len(shape) == 2 else "token_cross_entropy"
    y = _labels(loss, shape, 0).numpy()
    trainer = compile_training(copy.deepcopy(module), example_inputs=inputs, loss=loss,
                               optimizer=AdamW(lr=1e-3), target="cpu",
                               **({"parallel": True} if args.parallel else {}))
    print("dispatch:", trainer.report["backend_report"]["dispatch"])
    xs = [t.numpy() for t in inputs]
    for _ in range(3):
        trainer.step(xs, y)
    plain = []
    for _ in range(8):
        start = time.perf_counter()
        trainer.step(xs, y)
        plain.append((time.perf_counter() - start) * 1e3)
    calls: dict[str, list[float]] = collections.defaultdict(list)
    state = {"t0": 0.0}

    def instrument(func, symbol, before, ret, *call_args):
        now = time.perf_counter()
        if before:
            state["t0"] = now
        else:
            calls[str(symbol)].append((now - state["t0"]) * 1e3)
        return 0

    trainer._vm.set_instrument(instrument)
    walls = []
    for _ in range(args.steps):
        start = time.perf_counter()
        trainer.step(xs, y)
        walls.append((time.perf_counter() - start) * 1e3)
    n = args.steps
    kinds: collections.Counter = collections.Counter()
    for name, times in calls.items():
        kinds[_kind(name)] += sum(times) / n
    print(f"step: {statistics.median(plain):.1f} ms median of 8 plain, "
          f"{statistics.median(walls):.1f} ms instrumented; load average "
          f"{os.getloadavg()[0]:.2f}")
    for kind, ms in kinds.most_common():
        print(f"  {kind:22s} {ms:8.1f} ms per step")
    ranked = sorted(calls.items(), key=lambda item: -sum(item[1]))
    for name, times in ranked[:args.top]:
        print(f"  {sum(times) / n:8.2f} ms {len(times) // n:5d} calls  {_kind(name):20s} {name}")


if __name__ == "__main__":
    main()
