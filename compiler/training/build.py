"""anychip.compile_training: model -> training graph -> Relax backbone -> compiled step -> Trainer.

    trainer = anychip.compile_training(model, example_inputs=(x,), loss="cross_entropy",
                                       optimizer=anychip.optim.SGD(lr=0.1), target="cpu")
"""

from __future__ import annotations

from ..backend import CompileOptions
from ..errors import AnychipError
from ..registry import get_profile
from .backbone import build_backbone
from .graph import training_graph
from .losses import LOSSES
from .mixed import REDUCED, LossScaler, to_mixed
from .optim import SGD, Adam
from .schedules import Schedule
from .step import compile_step
from .trainer import Trainer


def compile_training(model, example_inputs=None, loss: str = "cross_entropy", optimizer=None,
                     target: str = "cpu", precision: str | None = None,
                     shapes: dict | None = None, schedule=None, accumulate: int = 1,
                     seed: int = 0, loss_scale: float | None = None, **extra) -> Trainer:
    """Compile one train step (forward, loss, gradient, optimizer update) for a target.

    `model`: a torch.nn.Module (with example_inputs giving the batch shape), 'zoo:NAME', an .onnx
    path or an onnx.ModelProto. `loss`: 'cross_entropy' (labels are class indices),
    'token_cross_entropy' (LM logits [B, T, V] against token ids [B, T], -100 ignored) or 'mse'.
    `optimizer`: anychip.optim.SGD, Adam or AdamW (torch's update rules). Keyword options
    beyond these go to the backend, as for anychip.compile (e.g. a family's precision mode).
    `shapes` ({input: shape}) fixes an ONNX model's input shapes, the batch shape trained on.
    `schedule`: an anychip.optim.schedules schedule (lr per update, no recompile).
    `accumulate`: batches whose mean gradient makes one optimizer update (default 1).
    `seed`: the seed of the Dropout masks (p > 0), drawn in the step by a counter-based RNG:
    the same seed gives the same masks, bit for bit (training/dropout.py).
    `precision` 'bf16' or 'fp16' on a target without that precision of its own (cpu): mixed
    precision with float32 master weights (training/mixed.py); fp16 adds dynamic loss scaling
    starting at `loss_scale` (default 2**16, torch.amp.GradScaler's).

    The whole model trains in train mode, as after model.train(): BatchNorm uses batch
    statistics and updates its running ones; parameters with requires_grad=False stay fixed.
    The user's module is not modified.
    """
    if loss not in LOSSES:
        raise AnychipError(f"unknown loss '{loss}'; supported: {', '.join(LOSSES)}.")
    if not isinstance(optimizer, (SGD, Adam)):
        raise AnychipError("compile_training needs optimizer=anychip.optim.SGD(lr=...), "
                           "anychip.optim.Adam(lr=...) or anychip.optim.AdamW(lr=...).")
    if not isinstance(accumulate, int) or accumulate < 1:
        raise AnychipError(f"accumulate must be an integer >= 1, got {accumulate!r}.")
    if schedule is not None and not isinstance(schedule, Schedule):
        raise AnychipError("schedule must come from anychip.optim.schedules (linear_warmup, "
                           "cosine, step).")
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise AnychipError(f"seed must be an integer in [0, 2**32), got {seed!r}.")
    profile = get_profile(target)  # an unknown target fails before any export work
    mixed = precision if precision in REDUCED and precision not in profile.precisions else None
    if mixed == "fp16" and loss == "mse":
        raise AnychipError("fp16 training scales the loss through the labels, which works for "
                           "the cross-entropy losses only; train mse with precision='bf16'.")
    if loss_scale is not None and (mixed != "fp16" or not loss_scale > 0):
        raise AnychipError(f"loss_scale (got {loss_scale!r}) is a number > 0 for "
                           f"precision='fp16' mixed-precision training only.")
    graph = training_graph(model, example_inputs, shapes)
    backbone = build_backbone(graph)
    mixed_report = None
    if mixed:
        backbone.module, mixed_report = to_mixed(backbone.module, mixed)
    options = CompileOptions(precision=None if mixed else precision, extra=dict(extra))
    step = compile_step(backbone, loss, optimizer, target, options, graph.label)
    trained = set(graph.params) | set(graph.states)
    fixed = dict(graph.extra)
    fixed.update({graph.keys[n]: v for n, v in graph.values.items()
                  if n not in trained and n in graph.keys})
    built_for = step.report["built_for"]
    plan = {
        "model": graph.label,
        "target": target,
        "family": get_profile(target).family,
        "built_family": get_profile(built_for).family,
        "precision": mixed or step.precision,
        "mixed": mixed_report,
        "loss_scale": (LossScaler(scale=float(loss_scale or 65536.0)).as_dict()
                       if mixed == "fp16" else None),
        "loss": loss,
        "optimizer": optimizer.as_dict(),
        "schedule": schedule.as_dict() if schedule is not None else None,
        "accumulate": accumulate,
        "dropout": ({"seed": seed, "rates": list(backbone.dropouts)} if backbone.dropouts
                    else None),
        "inputs": [s.as_dict() for s in backbone.inputs],
        "label": {"shape": list(step.label_shape), "dtype": step.label_dtype},
        "params": [graph.keys[n] for n in graph.params],
        "states": [graph.keys[n] for n in graph.states],
        "optim_count": len(step.optim_state),
        "state_dict_keys": [k for k in graph.state_dict_keys],
        "aliases": dict(graph.aliases),
        "counters": list(graph.counters),
        "runtime": step.runtime,
        "report": step.report,
    }
    arrays = {"params": [graph.values[n] for n in graph.params],
              "states": [graph.values[n] for n in graph.states],
              "optim": step.optim_state,
              "fixed": {k: fixed[k] for k in plan["state_dict_keys"] if k in fixed},
              "steps": 0}
    return Trainer(plan, arrays, step.executable, step.execution).warm_up()
