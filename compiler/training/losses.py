"""The losses a train step can end with, as relax.training Loss functions, and how the trainer
turns the user's labels into what the compiled step takes.

    cross_entropy        predictions [batch, classes], labels [batch] class indices
    token_cross_entropy  predictions [batch, seq, vocab] (language-model logits), labels
                         [batch, seq] token ids, IGNORE_INDEX (-100) positions not counted:
                         torch's F.cross_entropy(logits.view(-1, V), labels.view(-1)), i.e. the
                         mean over the counted tokens. Labels are used as given (already
                         shifted for next-token prediction where the model expects that).
    mse                  predictions and labels of the same shape, mean over every element

The compiled step never takes class indices. For cross_entropy it takes one-hot rows and
divides by the batch; for token_cross_entropy it takes one-hot rows already divided by the
number of counted tokens (zero rows for ignored ones), because that number changes from batch
to batch while the compiled step's constants cannot. -sum(log_softmax(x) * target) then equals
torch's mean: the product only adds zeros. TVM's own losses are not used, for two TVM 0.27 bugs
that stop the GPU families from compiling a train step: nll_loss's gradient kernel reads
through the label indices and dlight's GPU Reduction rule asserts on it (detect_dominant_read),
and `mean` to a scalar crashes the same rule in rfactor. Reducing with `sum` and scaling avoids
both (relax.one_hot in the graph would not do: it has no gradient).
"""

from __future__ import annotations

import numpy as np

from ..errors import AnychipError

LOSSES = ("cross_entropy", "token_cross_entropy", "mse")
IGNORE_INDEX = -100


def loss_function(name: str, prediction):
    """(relax.training Loss, label TensorType) for the loss `name` on these predictions."""
    shape = tuple(int(d) for d in prediction.shape)
    if name == "cross_entropy":
        if len(shape) != 2:
            hint = (" For language-model logits [batch, seq, vocab] use "
                    "loss='token_cross_entropy'." if len(shape) == 3 else "")
            raise AnychipError(f"loss 'cross_entropy' needs (batch, classes) predictions; the "
                               f"model gives shape {list(shape)}.{hint}")
        return _SumLoss(name, -1.0 / shape[0]), prediction
    if name == "token_cross_entropy":
        if len(shape) != 3:
            raise AnychipError(f"loss 'token_cross_entropy' needs (batch, seq, vocab) logits; "
                               f"the model gives shape {list(shape)}.")
        return _SumLoss(name, -1.0), prediction
    if name == "mse":
        return _SumLoss(name, 1.0 / int(np.prod(shape))), prediction
    raise AnychipError(f"unknown loss '{name}'; supported: {', '.join(LOSSES)}.")


def _SumLoss(name: str, scale: float):  # builds a relax.training Loss
    from tvm import relax
    from tvm.relax.training.loss import Loss

    class SumLoss(Loss):
        def __init__(self):
            super().__init__(f"{name}_loss", 1, "mean")

        def __call__(self, predictions, targets):
            pred = relax.Var("predictions", predictions)
            target = relax.Var("targets", targets)
            op = relax.op
            dtype = predictions.dtype.dtype
            bb = relax.BlockBuilder()
            with bb.function(self._loss_name, [pred, target]):
                with bb.dataflow():
                    if name == "mse":
                        diff = bb.emit(op.subtract(pred, target))
                        total = bb.emit(op.sum(op.multiply(diff, diff)))
                    else:
                        logp = bb.emit(op.nn.log_softmax(pred, axis=-1))
                        total = bb.emit(op.sum(op.multiply(logp, target)))
                    out = bb.emit_output(op.multiply(total, relax.const(scale, dtype)))
                bb.emit_func_output(out)
            return bb.get()[self._loss_name]

    return SumLoss()


def labels_for_step(loss: str, y, shape: tuple, dtype) -> np.ndarray:
    """The user's labels -> the array the compiled step takes (see the module docstring)."""
    arr = y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y)
    dtype = np.dtype(dtype)
    if loss == "mse":
        if arr.shape != shape:
            raise AnychipError(f"mse labels must have shape {list(shape)}, got {list(arr.shape)}.")
        if arr.dtype != dtype:
            raise AnychipError(f"mse labels must be {dtype.name}, got {arr.dtype}; cast them.")
        return np.array(arr, order="C")
    what = "one class index per example" if loss == "cross_entropy" else "one token id per position"
    if arr.shape != shape[:-1]:
        raise AnychipError(f"{loss} labels must have shape {list(shape[:-1])} ({what}), got "
                           f"{list(arr.shape)}.")
    if arr.dtype.kind not in "iu":
        raise AnychipError(f"{loss} labels are class indices (integers), got {arr.dtype}.")
    classes = shape[-1]
    counted = arr != IGNORE_INDEX if loss == "token_cross_entropy" else np.ones(arr.shape, bool)
    bad = counted & ((arr < 0) | (arr >= classes))
    if bad.any():
        raise AnychipError(f"label {int(arr[bad][0])} is out of range: the model has {classes} "
                           f"classes (0..{classes - 1})"
                           + (f"; {IGNORE_INDEX} marks ignored positions." if
                              loss == "token_cross_entropy" else "."))
    hot = np.zeros(shape, dtype)
    index = np.nonzero(counted)
    hot[(*index, arr[index].astype(np.int64))] = 1
    if loss == "token_cross_entropy":
        count = int(counted.sum())
        if count == 0:
            raise AnychipError(f"every label in the batch is {IGNORE_INDEX} (ignored): no token "
                               f"to train on.")
        hot /= dtype.type(count)
    return hot
