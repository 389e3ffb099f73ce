"""`anychip bench MODEL --train`: one compiled training step against torch eager and
torch.compile, timed interleaved in the same run (compiler/bench.py's method).

A step is what a training loop pays per batch: anychip's `trainer.step(x, y)` (inputs to the
device, forward, loss, backward, optimizer update, the loss back as a float) against torch's
`zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step(); loss.item()` with the
same optimizer rule (anychip.optim's `to_torch`), the same batch and the same thread count, all
from the same initial weights. torch.compile compiles the module (inductor) during the warm-up;
where it fails on this machine (no C++ compiler, an unsupported op) the failure is reported in
the notes and its column is n/a. The model comes as for `anychip train`: zoo:NAME (the zoo's
torch module and example batch) or a torch.nn.Module with example inputs (Python).

The loss follows the model's output: [B, C] -> cross_entropy on random classes, [B, T, V] ->
token_cross_entropy on random tokens, otherwise mse on random targets (override with loss=).
"""

from __future__ import annotations

import copy
import datetime
import platform
from collections.abc import Callable
from typing import Any

import numpy as np

from .bench import BenchResult, Latency, _brief, _cpu_name, _load, time_interleaved
from .dispatch import choose_openmp_wait_policy, run_threads, usable_cores
from .errors import AnychipError, NotExecutable

TRAIN_ENGINES = ("torch", "torch.compile")


def _torch_model(model, example_inputs):
    """(torch module, example inputs tuple, label) as anychip train gets them."""
    if isinstance(model, str) and model.startswith("zoo:"):
        from anychip import models as zoo

        built = zoo.build(model[4:])
        module = built.torch_module
        if module is None:
            raise AnychipError(f"{model}: bench --train needs a torch model; this zoo entry is "
                               f"ONNX only.")
        inputs = example_inputs if example_inputs is not None else built.example_inputs
        return module, tuple(inputs), model
    from .frontend import _is_torch_module

    if _is_torch_module(model):
        if example_inputs is None:
            raise AnychipError("bench --train of a torch module needs example_inputs.")
        inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (
            example_inputs,)
        return model, tuple(inputs), f"<torch {type(model).__name__}>"
    raise AnychipError(f"{model}: bench --train times a step against torch, so it needs a torch "
                       f"model: zoo:NAME (see 'anychip zoo') or a torch.nn.Module.")


def _labels(loss: str, output_shape: tuple, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    if loss == "cross_entropy":
        return torch.randint(0, output_shape[-1], output_shape[:1], generator=gen)
    if loss == "token_cross_entropy":
        return torch.randint(0, output_shape[-1], output_shape[:2], generator=gen)
    return torch.randn(output_shape, generator=gen)


def _torch_loss(loss: str):
    import torch.nn.functional as F

    if loss == "cross_entropy":
        return F.cross_entropy
    if loss == "token_cross_entropy":
        return lambda out, y: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1),
                                              ignore_index=-100)
    return F.mse_loss


def _torch_step(module, optimizer, loss: str, x, y, threads: int) -> Callable[[], float]:
    import torch

    opt = optimizer.to_torch([p for p in module.parameters() if p.requires_grad])
    loss_fn = _torch_loss(loss)
    clip = getattr(optimizer, "clip_grad_norm", None)
    params = [p for p in module.parameters() if p.requires_grad]

    def step() -> float:
        torch.set_num_threads(threads)
        opt.zero_grad(set_to_none=True)
        value = loss_fn(module(*x), y)
        value.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return float(value.item())

    return step


def bench_train(model, target: str = "cpu", example_inputs=None,
                against: tuple[str, ...] = TRAIN_ENGINES, warmup: int = 3, repeat: int = 10,
                loss: str | None = None, optimizer=None, precision: str | None = None,
                seed: int = 0) -> BenchResult:
    """Compile the train step for `target` and time it with torch in the same run."""
    import torch

    from .registry import get_backend, get_profile
    from .training import compile_training
    from .training.optim import AdamW

    unknown = [e for e in against if e not in TRAIN_ENGINES]
    if unknown:
        raise AnychipError(f"--against {','.join(unknown)}: with --train the engines are "
                           f"{', '.join(TRAIN_ENGINES)}.")
    if warmup < 1 or repeat < 1:
        raise AnychipError("with --train, --warmup and --repeat must be >= 1.")
    profile = get_profile(target)
    execution = get_backend(profile).execution(profile)
    if not execution.can_run:
        raise NotExecutable(f"target '{target}' cannot run here ({execution.mode.verb}): "
                            f"{execution.why}; bench --train needs a target that executes.")
    module, inputs, label = _torch_model(model, example_inputs)
    initial = copy.deepcopy(module).train()
    with torch.no_grad():
        out = initial(*inputs)
    shape = tuple(out.shape)
    loss = loss or ("cross_entropy" if len(shape) == 2 else
                    "token_cross_entropy" if len(shape) == 3 else "mse")
    optimizer = optimizer or AdamW(lr=1e-3)
    y = _labels(loss, shape, seed)
    trainer = compile_training(copy.deepcopy(initial), example_inputs=inputs, loss=loss,
                               optimizer=optimizer, target=target, precision=precision)
    threads = run_threads(trainer.plan["runtime"].get("num_threads"))
    xs = [t.numpy() for t in inputs]
    ynp = y.numpy()
    engines: dict[str, Callable[[], Any]] = {"anychip": lambda: trainer.step(xs, ynp)}
    notes: dict[str, str] = {}
    if "torch" in against:
        engines["torch"] = _torch_step(copy.deepcopy(initial), optimizer, loss, inputs, y,
                                       threads)
    if "torch.compile" in against:
        compiled_step, why = _compiled(initial, optimizer, loss, inputs, y, threads)
        if compiled_step is None:
            notes["torch.compile"] = why
        else:
            engines["torch.compile"] = compiled_step
    load_before = _load()
    samples = time_interleaved(engines, warmup, repeat)
    ours = Latency.of(samples["anychip"])
    others: dict[str, dict | None] = {}
    ratio: dict[str, float | None] = {}
    for name in against:
        if name in samples:
            lat = Latency.of(samples[name])
            others[name], ratio[name] = _brief(lat), ours.median / lat.median
        else:
            others[name], ratio[name] = None, None
    notes.setdefault("step", f"{loss}, {optimizer.as_dict()['name']} (lr "
                             f"{optimizer.lr:g}), batch {list(inputs[0].shape)}, "
                             f"{trainer.precision}; anychip step compiled in "
                             f"{trainer.report['compile_s']:.1f} s")
    return BenchResult(
        model=f"{label} train step", target=target, how=trainer.execution.mode.verb,
        threads=threads, warmup=warmup, repeat=repeat, latency_ms=_brief(ours),
        engines=others, ratio=ratio, notes=notes,
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        machine={"cpu": _cpu_name(), "cores_usable": usable_cores(),
                 "platform": platform.platform(),
                 "openmp_wait_policy": choose_openmp_wait_policy(),
                 "load_avg_before": load_before, "load_avg_after": _load()})


def _compiled(initial, optimizer, loss, inputs, y, threads):
    """(torch.compile step, '') or (None, why it does not work here). The compile itself
    happens in a first call here, untimed, so a failure is caught and reported."""
    import torch

    try:
        module = torch.compile(copy.deepcopy(initial))
        step = _torch_step(module, optimizer, loss, inputs, y, threads)
        value = step()
        if not np.isfinite(value):
            return None, f"torch.compile gave a non-finite loss ({value})"
        return step, ""
    except Exception as exc:  # noqa: BLE001 - inductor raises many kinds; reported, not fatal
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return None, f"torch.compile failed here: {type(exc).__name__}: {first}"
