"""trainer.fit: epochs over batches, an eval loss per epoch, progress, and a loss log.

    history = trainer.fit(batches, epochs=3, eval_batches=val, log="losses.csv")

`batches` and `eval_batches` are iterables of (x, y) re-iterated each epoch (a list, or any
object whose __iter__ starts over). Progress: a tqdm bar when stderr is a terminal (or with
progress=True), otherwise nothing per step and one line per epoch. The log has one row per
training batch (kind "train") and one per epoch with eval batches (kind "eval": the mean eval
loss): epoch, step (optimizer updates so far), batch, lr, loss. It is CSV, or JSON (a list of
the same rows) when the name ends in .json, rewritten atomically after every epoch so a crashed
run keeps what it had; `checkpoint` (a .safetensors path) is rewritten after every epoch too.
Returns the same rows.
"""

from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np

from ..atomic import write_file
from ..errors import AnychipError

FIELDS = ["epoch", "kind", "step", "batch", "lr", "loss"]


def write_log(path: str, rows: list[dict]) -> None:
    if path.endswith(".json"):
        data = json.dumps(rows, indent=1).encode()
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        data = buf.getvalue().encode()

    def write(tmp):
        tmp.write_bytes(data)

    write_file(path, write, force=True)


def _bar(total, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=True,
                dynamic_ncols=True)


def fit(trainer, batches, epochs: int = 1, eval_batches=None, log=None, progress=None,
        checkpoint=None):
    if not isinstance(epochs, int) or epochs < 1:
        raise AnychipError(f"fit: epochs must be an integer >= 1, got {epochs!r}.")
    if iter(batches) is batches and epochs > 1:
        raise AnychipError("fit: batches is a one-shot iterator; give a list (or another "
                           "re-iterable) to train more than one epoch.")
    log = None if log is None else str(log)
    if log is not None and not log.endswith((".csv", ".json")):
        raise AnychipError(f"{log}: the loss log is written as .csv or .json; name it so.")
    show = sys.stderr.isatty() if progress is None else bool(progress)
    rows: list[dict] = []
    for epoch in range(1, epochs + 1):
        total = len(batches) if hasattr(batches, "__len__") else None
        bar = _bar(total, f"epoch {epoch}/{epochs}", show)
        losses = []
        try:
            for index, (x, y) in enumerate(batches):
                lr = trainer.lr
                loss = trainer.step(x, y)
                losses.append(loss)
                rows.append({"epoch": epoch, "kind": "train", "step": trainer.steps,
                             "batch": index, "lr": lr, "loss": loss})
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if not losses:
            raise AnychipError("fit: the batches are empty; nothing to train on.")
        line = f"epoch {epoch}/{epochs}: {len(losses)} batches, mean loss {np.mean(losses):.6g}"
        if eval_batches is not None:
            evals = [trainer.evaluate(x, y) for x, y in eval_batches]
            if evals:
                rows.append({"epoch": epoch, "kind": "eval", "step": trainer.steps,
                             "batch": len(evals), "lr": trainer.lr,
                             "loss": float(np.mean(evals))})
                line += f", eval loss {np.mean(evals):.6g}"
        print(line, file=sys.stderr)
        if log is not None:
            write_log(log, rows)
        if checkpoint is not None:
            trainer.save_checkpoint(checkpoint, force=True)
    return rows
