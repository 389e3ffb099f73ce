"""The Trainer: runs the compiled train step; parameters and optimizer state stay on the device.

    loss = trainer.step(x, y)           # numpy or torch in; the loss as a float
    trainer.fit(batches, epochs=3, eval_batches=val, log="losses.csv")   # training/fit.py
    trainer.state_dict() / load_state_dict(sd)   # numpy arrays keyed like model.state_dict()
    trainer.save(path); anychip.load_training(path)                # step + state, one folder
    trainer.save_checkpoint("ck.safetensors"); trainer.load_checkpoint(...)  # state only

Between steps the parameters, the BatchNorm statistics and the optimizer state are
tvm.runtime tensors on the target's device; only the inputs go in and the scalar loss comes out.
With gradient accumulation (plan["accumulate"] = k), the gradients of k consecutive batches are
summed on the host and their mean goes to one optimizer update (torch's loss / k, backward k
times, then step). The optimizer's lr slot gets lr * schedule(update) before each update.
"""

from __future__ import annotations

import os

import numpy as np

from ..backend import Execution
from ..errors import AnychipError, NotExecutable
from ..frontend import TensorSpec
from ..inputs import order_inputs
from ..tolerances import Tolerance, tolerance_for
from .losses import labels_for_step
from .step import ADJOINT, OPTIMIZER


class Trainer:
    """A compiled train step with its state. Built by anychip.compile_training or load_training.

    `plan` is the JSON-able description (names, shapes, target, loss, optimizer); `arrays` holds
    params, states, optim (lists, backbone order), fixed (state_dict entries not trained) and
    steps; `library` is the relax Executable, or the bytes of its lib.so once saved and loaded.
    """

    def __init__(self, plan: dict, arrays: dict, library, execution: Execution):
        self.plan = plan
        self.execution = execution
        self._library = library
        self._fixed = {k: np.array(v) for k, v in arrays["fixed"].items()}
        self._host = {"params": [np.array(a) for a in arrays["params"]],
                      "states": [np.array(a) for a in arrays["states"]],
                      "optim": [np.array(a) for a in arrays["optim"]]}
        self.steps = int(arrays.get("steps", 0))        # optimizer updates done
        self.micro = int(arrays.get("micro", 0))        # batches into the current accumulation
        self.draws = int(arrays.get("draws", 0))        # training forward passes (dropout key)
        from .mixed import LossScaler

        scaler = arrays.get("scaler") or plan.get("loss_scale")
        self.scaler = LossScaler(**scaler) if scaler else None   # fp16 dynamic loss scale
        pending = arrays.get("pending")
        self._pending = [np.array(g) for g in pending] if pending else None
        self._vm = None
        self._dev = None
        self._params = self._states = self._optim = None

    # -- what it is ----------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return self.plan["target"]

    @property
    def precision(self) -> str:
        return self.plan["precision"]

    @property
    def tolerance(self) -> Tolerance:
        """The training tolerance for the precision this step was built with."""
        return tolerance_for(self.precision, "float32", training=True)

    @property
    def report(self) -> dict:
        return dict(self.plan["report"])

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.plan["inputs"]]

    def describe(self) -> str:
        """One line: target, how it runs here, precision, and any build note."""
        note = self.plan["report"].get("note")
        text = (f"{self.target}: {self.execution.mode.verb} ({self.execution.why}); "
                f"{self.precision}, loss {self.plan['loss']}, {self.plan['optimizer']['name']}")
        return f"{text}; {note}" if note else text

    # -- running -------------------------------------------------------------------------------
    def _runtime(self):
        if self._vm is not None:
            return self._vm
        if not self.execution.can_run:
            raise NotExecutable(f"target '{self.target}': the train step was compiled but cannot "
                                f"run here: {self.execution.why}. Save it with trainer.save() "
                                f"and run it where the device is.")
        import tvm
        from tvm import relax

        device = self.plan["runtime"].get("device")
        if not device:
            raise NotExecutable(f"target '{self.target}': its backend did not say which device "
                                f"runs its code (BuildResult.runtime['device']).")
        # kernel libraries the step calls into (library dispatch) must be registered first:
        # the VM resolves packed functions when it is created
        from ..dispatch import make_available

        runtime = self.plan["runtime"]
        make_available(list(runtime.get("libraries", [])),
                       int(runtime.get("num_threads") or os.cpu_count() or 1))
        self._dev = tvm.device(device, 0)
        self._vm = relax.VirtualMachine(_loadable(self.library_bytes()), self._dev)
        self._upload()
        return self._vm

    def _upload(self) -> None:
        import tvm

        def put(arrays):
            return [tvm.runtime.tensor(np.array(a, order="C"), self._dev) for a in arrays]

        self._params = put(self._host["params"])
        self._states = put(self._host["states"])
        self._optim = put(self._host["optim"])

    def _labels(self, y) -> np.ndarray:
        """Labels as the compiled step takes them (training/losses.py)."""
        label = labels_for_step(self.plan["loss"], y, tuple(self.plan["label"]["shape"]),
                                self.plan["label"]["dtype"])
        if self.scaler is not None:   # loss * S: the cross-entropy losses are linear in these
            label = label * label.dtype.type(self.scaler.scale)
        return label

    @property
    def accumulate(self) -> int:
        return int(self.plan.get("accumulate", 1))

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer update uses (lr * schedule factor)."""
        from .schedules import from_dict

        base = float(self.plan["optimizer"]["lr"])
        schedule = from_dict(self.plan.get("schedule"))
        return base * (schedule.factor(self.steps) if schedule else 1.0)

    @property
    def dropout_seed(self) -> int | None:
        """The seed of the dropout masks (None when the model has no Dropout with p > 0)."""
        dropout = self.plan.get("dropout")
        return int(dropout["seed"]) if dropout else None

    def _dropout_key(self, train: bool) -> list:
        """[uint32 (seed, counter, train)] for a step with dropout, else []."""
        import tvm

        if not self.plan.get("dropout"):
            return []
        key = np.array([self.dropout_seed, self.draws, int(train)], dtype=np.uint64)
        return [tvm.runtime.tensor((key & 0xFFFFFFFF).astype(np.uint32), self._dev)]

    def _forward_backward(self, x, y, train: bool = True):
        import tvm

        vm = self._runtime()
        feed = list(x) if isinstance(x, (tuple, list)) else x
        xs = order_inputs(self.inputs, feed, f"train step of {self.plan['model']}")
        label = self._labels(y)
        args = ([tvm.runtime.tensor(a, self._dev) for a in xs] + self._dropout_key(train)
                + self._params + self._states + [tvm.runtime.tensor(label, self._dev)])
        ret, grads = vm[ADJOINT](*args)
        if self._states:
            return ret[0], list(ret[1:]), grads
        return ret, [], grads

    def step(self, x, y) -> float:
        """One batch: forward, gradient and (every `accumulate` batches) one optimizer update.
        Returns the batch's loss before the update, as torch does."""
        import tvm

        loss, states, grads = self._forward_backward(x, y)
        value = self._unscaled(loss)
        self.draws += 1
        self._states = states
        for key in self.plan["counters"]:
            self._fixed[key] = self._fixed[key] + 1
        self.micro += 1
        if self.accumulate > 1:
            host = [g.numpy() for g in grads]
            self._pending = host if self._pending is None else [
                a + b for a, b in zip(self._pending, host)]
            if self.micro < self.accumulate:
                return value
            scale = np.float32(1.0 / self.accumulate)
            grads = [tvm.runtime.tensor(np.array(g * scale, dtype=g.dtype), self._dev)
                     for g in self._pending]
            self._pending = None
        self.micro = 0
        if self.scaler is not None:
            # GradScaler: unscale in float32, skip the update (and back off) on inf/NaN
            inv = np.float32(1.0 / self.scaler.scale)
            host = [g.numpy() * inv for g in grads]
            finite = all(bool(np.isfinite(g).all()) for g in host)
            self.scaler.update(finite)
            if not finite:
                return value
            grads = [tvm.runtime.tensor(np.array(g, order="C"), self._dev) for g in host]
        self._optim[0] = tvm.runtime.tensor(
            np.array(self.lr, dtype=self._host["optim"][0].dtype), self._dev)
        new_params, new_optim = self._runtime()[OPTIMIZER](self._params, grads, self._optim)
        self._params, self._optim = list(new_params), list(new_optim)
        self.steps += 1
        return value

    def _unscaled(self, loss) -> float:
        value = float(loss.numpy())
        return value / self.scaler.scale if self.scaler is not None else value

    def evaluate(self, x, y) -> float:
        """The loss on a batch with the current parameters; nothing is updated (the compiled
        graph is the train-mode one: BatchNorm normalises with the batch's statistics; Dropout
        is the identity, as in eval mode)."""
        loss, _, _ = self._forward_backward(x, y, train=False)
        return self._unscaled(loss)

    def fit(self, batches, epochs: int = 1, eval_batches=None, log=None, progress=None,
            checkpoint=None):
        """Train over `batches` (an iterable of (x, y), re-iterated each epoch); see fit.py."""
        from .fit import fit

        return fit(self, batches, epochs=epochs, eval_batches=eval_batches, log=log,
                   progress=progress, checkpoint=checkpoint)

    # -- state ---------------------------------------------------------------------------------
    def _current(self) -> dict:
        """params, states and optimizer state as numpy (from the device when it runs)."""
        if self._vm is None:
            return {k: list(v) for k, v in self._host.items()}
        return {"params": [t.numpy() for t in self._params],
                "states": [t.numpy() for t in self._states],
                "optim": [t.numpy() for t in self._optim]}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Numpy arrays keyed like the model's state_dict (initializer names for ONNX models)."""
        current = self._current()
        by_key = dict(zip(self.plan["params"], current["params"]))
        by_key.update(zip(self.plan["states"], current["states"]))
        by_key.update(self._fixed)
        for key, source in self.plan["aliases"].items():
            by_key[key] = by_key[source]
        return {key: np.array(by_key[key]) for key in self.plan["state_dict_keys"]}

    def load_state_dict(self, state_dict) -> None:
        """Replace every entry (strict, like torch): same keys, shapes and dtype kinds."""
        expected = self.state_dict()
        given = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
                 for k, v in dict(state_dict).items()}
        missing = [k for k in expected if k not in given]
        unknown = [k for k in given if k not in expected]
        if missing or unknown:
            what = (f"missing {', '.join(missing[:5])}" if missing else
                    f"unknown {', '.join(unknown[:5])}")
            raise AnychipError(f"load_state_dict: keys do not match the model ({what}).")
        for key, old in expected.items():
            new = given[key]
            if new.shape != old.shape or new.dtype.kind != old.dtype.kind:
                raise AnychipError(f"load_state_dict: '{key}' is {new.dtype}{list(new.shape)}, "
                                   f"the model has {old.dtype}{list(old.shape)}.")
            given[key] = np.array(new.astype(old.dtype, copy=False), order="C")
        self._host["params"] = [given[k] for k in self.plan["params"]]
        self._host["states"] = [given[k] for k in self.plan["states"]]
        self._host["optim"] = self._current()["optim"]
        for key in self._fixed:
            self._fixed[key] = given[key]
        if self._vm is not None:
            self._upload()

    def arrays(self) -> dict:
        """Everything save() writes besides the library."""
        return {**self._current(), "fixed": dict(self._fixed), "steps": self.steps,
                "micro": self.micro, "draws": self.draws, "pending": list(self._pending or []),
                "scaler": self.scaler.as_dict() if self.scaler is not None else None}

    def save_checkpoint(self, path, force: bool = False):
        """Parameters, BatchNorm statistics, optimizer state, step counters (and gradients of
        an unfinished accumulation) as one .safetensors file; see checkpoint.py."""
        from .checkpoint import save_checkpoint

        return save_checkpoint(self, path, force=force)

    def load_checkpoint(self, path) -> None:
        """Continue from a checkpoint of this same trainer (bit-identical on cpu)."""
        from .checkpoint import load_checkpoint

        load_checkpoint(self, path)

    def _restore(self, arrays: dict) -> None:
        """Replace the whole training state (a checkpoint's), on the device when it runs."""
        self._host = {k: [np.array(a, order="C") for a in arrays[k]]
                      for k in ("params", "states", "optim")}
        self._fixed = {k: np.array(v) for k, v in arrays["fixed"].items()}
        self.steps, self.micro = int(arrays["steps"]), int(arrays["micro"])
        self.draws = int(arrays.get("draws", 0))
        if arrays.get("scaler"):
            from .mixed import LossScaler

            self.scaler = LossScaler(**arrays["scaler"])
        self._pending = [np.array(g) for g in arrays["pending"]] or None
        if self._vm is not None:
            self._upload()

    def save(self, path, force: bool = False):
        """Publish a trainer folder atomically (temp folder + rename); see training/saved.py."""
        from .saved import save_trainer

        return save_trainer(self, path, force=force)

    def library_bytes(self) -> bytes:
        """The step as a shared library (exported once: the VM and save() use the same bytes)."""
        if not isinstance(self._library, (bytes, bytearray)):
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory(prefix="anychip-train-") as tmp:
                path = Path(tmp) / "lib.so"
                self._library.export_library(str(path))
                self._library = path.read_bytes()
        return bytes(self._library)

    def warm_up(self) -> Trainer:
        """Load the step onto the device now (when it can run here) instead of at the first step."""
        if self.execution.can_run:
            self._runtime()
        return self


def _loadable(library: bytes):
    """Load library bytes through a private temporary file (the bytes that were checked)."""
    import tempfile

    import tvm

    fd, name = tempfile.mkstemp(prefix="anychip-train-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(library)
        return tvm.runtime.load_module(name)
    finally:
        os.unlink(name)


def load_trainer(path) -> Trainer:
    """anychip.load_training: a saved trainer folder, checked (training/saved.py), as a Trainer."""
    from .saved import read_trainer

    return Trainer(*read_trainer(path))
