"""`anychip train MODEL --target T --data data.npz --epochs N [--batch-size B] [-o params.npz]`.

MODEL is zoo:NAME (a built-in torch model) or an .onnx file (its float initializers are
trained, BatchNorm in training mode). The loop is trainer.fit (training/fit.py): optimizer,
--clip-grad-norm, --schedule, --accumulate, --eval-data, --log and --checkpoint/--resume map
to compile_training's and fit's options one to one. data.npz holds `x` (inputs, batch first)
and `y` (class indices for cross_entropy, token ids [N, T] for token_cross_entropy, targets
for mse). Batches are drawn in a seeded random order each
epoch; a last partial batch is dropped, because the compiled step has a static batch shape.
The parameters are written as .npz, or .safetensors where the `safetensors` package is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import progress
from ..errors import AnychipError, NotExecutable
from ..inputs import load_npz
from .family_flags import add_family_flags, family_options_for


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model with the compiled train step of a target")
    p.add_argument("model", help="zoo:NAME (see 'anychip zoo') or an .onnx file")
    p.add_argument("--target", "-t", default="cpu", help="target name (see 'anychip targets')")
    p.add_argument("--data", required=True, help=".npz with arrays x (inputs) and y (labels)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the data (default 1)")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--loss", choices=["cross_entropy", "token_cross_entropy", "mse"],
                   help="default: cross_entropy for integer y, mse for float y")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd")
    p.add_argument("--lr", type=float, default=None, help="learning rate (sgd 0.01, adam 0.001)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay (default 0; adamw 0.01, decoupled)")
    p.add_argument("--clip-grad-norm", type=float, default=None,
                   help="clip gradients to this global L2 norm before each update")
    p.add_argument("--schedule", choices=["constant", "linear", "cosine", "step"],
                   default="constant", help="learning-rate schedule over the updates")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear/cosine warm-up updates")
    p.add_argument("--step-size", type=int, default=1, help="step schedule: updates per decay")
    p.add_argument("--gamma", type=float, default=0.1, help="step schedule: decay factor")
    p.add_argument("--accumulate", type=int, default=1,
                   help="batches whose mean gradient makes one update (default 1)")
    p.add_argument("--eval-data", help=".npz (x, y) evaluated after every epoch")
    p.add_argument("--log", help="loss log, one row per batch (.csv or .json)")
    p.add_argument("--checkpoint", help="write a .safetensors checkpoint after every epoch")
    p.add_argument("--resume", help="continue from a .safetensors checkpoint of the same setup")
    p.add_argument("--precision", help="precision, as for 'anychip compile' (per target); "
                                       "bf16/fp16 on a target without them (cpu): mixed "
                                       "precision with fp32 master weights")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the batch order and of the Dropout masks (p > 0)")
    p.add_argument("--no-shuffle", action="store_true", help="keep the data order")
    p.add_argument("-o", "--output", help="write the trained parameters (.npz or .safetensors)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    add_family_flags(p)
    p.set_defaults(func=run)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise AnychipError(f"{name} must be at least 1, got {value}.")


def load_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    data = load_npz(path)
    missing = [k for k in ("x", "y") if k not in data]
    if missing:
        raise AnychipError(f"{path}: no array '{missing[0]}'; the file needs x (inputs) and y "
                           f"(labels), e.g. numpy.savez('data.npz', x=x, y=y).")
    x, y = data["x"], data["y"]
    if x.ndim < 1 or y.ndim < 1 or len(x) != len(y):
        raise AnychipError(f"{path}: x has {len(x) if x.ndim else 0} examples and y "
                           f"{len(y) if y.ndim else 0}; they must match (batch first).")
    if x.dtype.kind == "f" and x.dtype != np.float32:
        x = x.astype(np.float32)
    return x, y


def make_optimizer(args):
    from ..training.optim import SGD, Adam, AdamW

    clip = getattr(args, "clip_grad_norm", None)
    decay = args.weight_decay
    if args.optimizer in ("adam", "adamw"):
        kind = AdamW if args.optimizer == "adamw" else Adam
        default_decay = 0.01 if kind is AdamW else 0.0
        return kind(lr=args.lr if args.lr is not None else 1e-3,
                    weight_decay=default_decay if decay is None else decay, clip_grad_norm=clip)
    return SGD(lr=args.lr if args.lr is not None else 0.01, momentum=args.momentum,
               weight_decay=decay or 0.0, clip_grad_norm=clip)


def make_schedule(args, updates: int):
    """The --schedule over `updates` optimizer updates (None for a constant lr)."""
    from ..training import schedules

    if args.schedule == "linear":
        return schedules.linear_warmup(args.warmup_steps, updates)
    if args.schedule == "cosine":
        return schedules.cosine(updates, warmup_steps=args.warmup_steps)
    if args.schedule == "step":
        return schedules.step(args.step_size, args.gamma)
    if args.warmup_steps:
        return schedules.linear_warmup(args.warmup_steps)
    return None


class _Batches:
    """Fixed-size batches in a seeded random order, reshuffled on every pass (one per epoch)."""

    def __init__(self, x, y, batch_size: int, rng, shuffle: bool):
        self.x, self.y, self.size, self.rng, self.shuffle = x, y, batch_size, rng, shuffle

    def __len__(self) -> int:
        return len(self.x) // self.size

    def __iter__(self):
        order = self.rng.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
        for i in range(len(self)):
            batch = order[i * self.size:(i + 1) * self.size]
            yield self.x[batch], self.y[batch]


def _model_and_inputs(model: str, x_batch: np.ndarray):
    """(model argument, example_inputs, shapes) for compile_training."""
    if model.startswith("zoo:"):
        import torch

        return model, (torch.from_numpy(np.array(x_batch)),), None
    if not model.endswith(".onnx"):
        raise AnychipError(f"{model}: give zoo:NAME or an .onnx file to train.")
    import onnx

    from ..frontend import graph_inputs

    names = graph_inputs(onnx.load(model, load_external_data=False))
    if len(names) != 1:
        raise AnychipError(f"{model}: has {len(names)} inputs; 'anychip train' feeds one (x).")
    return model, None, {names[0]: tuple(x_batch.shape)}


def check_output(path: str, force: bool) -> None:
    """Refuse a bad -o before any compiling or training is spent on it."""
    if Path(path).exists() and not force:
        raise AnychipError(f"{path}: already exists; pass --force to replace it.")
    if path.endswith(".safetensors"):
        try:
            import safetensors.numpy  # noqa: F401
        except ImportError as exc:
            raise AnychipError(f"{path}: writing .safetensors needs the 'safetensors' package "
                               f"(pip install safetensors); or write -o params.npz.") from exc
    elif not path.endswith(".npz"):
        raise AnychipError(f"{path}: the parameters are written as .npz or .safetensors; "
                           f"name the file accordingly.")


def write_params(path: str, state: dict, force: bool) -> str:
    """.npz, or .safetensors through the safetensors package (atomic: temp file + rename)."""
    from ..atomic import write_file
    from ..inputs import save_npz

    if path.endswith(".safetensors"):
        from safetensors.numpy import save_file

        arrays = {k: np.asarray(v, order="C") for k, v in state.items()}
        write_file(path, lambda tmp: save_file(arrays, str(tmp)), force=force)
    else:
        save_npz(path, state, force=force)
    return path


def run(args) -> int:
    from ..training import compile_training

    _positive("--epochs", args.epochs)
    _positive("--batch-size", args.batch_size)
    if args.output:
        check_output(args.output, args.force)
    x, y = load_data(args.data)
    if len(x) < args.batch_size:
        raise AnychipError(f"{args.data}: {len(x)} examples, fewer than one batch of "
                           f"{args.batch_size}; lower --batch-size.")
    loss = args.loss or ("cross_entropy" if y.dtype.kind in "iu" else "mse")
    if loss == "mse" and y.dtype.kind == "f":
        y = y.astype(np.float32)
    _positive("--accumulate", args.accumulate)
    for name in ("log", "checkpoint"):
        value = getattr(args, name)
        if value and Path(value).exists() and not args.force:
            raise AnychipError(f"{value}: already exists; pass --force to replace it.")
    updates = args.epochs * (len(x) // args.batch_size) // args.accumulate
    schedule = make_schedule(args, max(1, updates))
    model, example, shapes = _model_and_inputs(args.model, x[:args.batch_size])
    extra = family_options_for(args, args.target)
    with progress.stage(f"compile the train step for {args.target}"):
        trainer = compile_training(model, example_inputs=example, loss=loss,
                                   optimizer=make_optimizer(args), target=args.target,
                                   precision=args.precision, shapes=shapes, schedule=schedule,
                                   accumulate=args.accumulate, seed=args.seed, **extra)
    print(f"train step: {trainer.describe()}; compiled in {trainer.report['compile_s']:.1f} s")
    mixed = trainer.plan.get("mixed")
    if mixed:
        ops = "; ".join(f"{dtype}: " + ", ".join(f"{k} x{v}" for k, v in found.items())
                        for dtype, found in mixed["ops"].items() if found)
        print(f"mixed precision: forward and backward in {mixed['compute_dtype']} ({ops}); "
              f"master weights, optimizer state and loss in float32"
              + ("; fp16 dynamic loss scaling" if trainer.scaler is not None else ""))
    if not trainer.execution.can_run:
        raise NotExecutable(f"target '{args.target}': the train step compiled, but it cannot run "
                            f"here: {trainer.execution.why}.")
    if args.resume:
        trainer.load_checkpoint(args.resume)
        print(f"resumed from {args.resume} at update {trainer.steps}")
    evals = None
    if args.eval_data:
        ex, ey = load_data(args.eval_data)
        if loss == "mse" and ey.dtype.kind == "f":
            ey = ey.astype(np.float32)
        evals = _Batches(ex, ey, args.batch_size, None, shuffle=False)
    rng = np.random.default_rng(args.seed)
    batches = _Batches(x, y, args.batch_size, rng, shuffle=not args.no_shuffle)
    rows = trainer.fit(batches, epochs=args.epochs, eval_batches=evals, log=args.log,
                       checkpoint=args.checkpoint)
    train_rows = [r for r in rows if r["kind"] == "train"]
    last = train_rows[-1]["loss"] if train_rows else float("nan")
    print(f"trained {trainer.steps} steps on {args.target} ({trainer.execution.mode.verb}); "
          f"final loss {last:.6g}")
    if args.output:
        written = write_params(args.output, trainer.state_dict(), args.force)
        print(f"wrote {written}")
    return 0
