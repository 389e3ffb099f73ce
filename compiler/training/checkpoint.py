"""Training checkpoints: the whole training state of a Trainer in one .safetensors file.

    trainer.save_checkpoint("ck.safetensors")      # mid-run, at any step
    trainer = anychip.compile_training(...same model, optimizer...)   # or anychip.load_training
    trainer.load_checkpoint("ck.safetensors")      # continues exactly where the run stopped

Tensors: params/<key>, states/<key> (BatchNorm statistics), optim/<i> (the optimizer state:
lr slot, bias corrections, moments), fixed/<key> (untrained state_dict entries, counters),
pending/<i> (gradients summed so far in an unfinished accumulation). The metadata records the
step counters and what the state belongs to (model, parameter keys and shapes, optimizer with
its hyper-parameters, schedule, accumulation), and loading refuses a checkpoint of anything
else, so a continuation is the same computation on the same values: bit-identical on cpu.
safetensors holds no code (no pickle); the file is written atomically.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..atomic import write_file
from ..errors import AnychipError

FORMAT = "anychip-train-checkpoint/1"


def _identity(trainer) -> dict:
    plan = trainer.plan
    shapes = [[k, list(np.shape(v))] for k, v in zip(plan["params"], trainer._host["params"])]
    return {"model": plan["model"], "loss": plan["loss"], "optimizer": plan["optimizer"],
            "schedule": plan.get("schedule"), "accumulate": plan.get("accumulate", 1),
            "params": shapes, "states": plan["states"], "optim_count": plan["optim_count"],
            **({"dropout": plan["dropout"]} if plan.get("dropout") else {}),
            **({"precision": plan["precision"]} if plan.get("mixed") else {})}


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def save_checkpoint(trainer, path, force: bool = False):
    from safetensors.numpy import save_file

    path = str(path)
    if not path.endswith(".safetensors"):
        raise AnychipError(f"{path}: checkpoints are .safetensors files; name it so.")
    arrays = trainer.arrays()
    tensors = {}
    for key, value in zip(trainer.plan["params"], arrays["params"]):
        tensors[f"params/{key}"] = value
    for key, value in zip(trainer.plan["states"], arrays["states"]):
        tensors[f"states/{key}"] = value
    for i, value in enumerate(arrays["optim"]):
        tensors[f"optim/{i}"] = value
    for key, value in arrays["fixed"].items():
        tensors[f"fixed/{key}"] = value
    for i, value in enumerate(arrays["pending"]):
        tensors[f"pending/{i}"] = value
    tensors = {k: np.array(v, order="C") for k, v in tensors.items()}  # keeps 0-d as 0-d
    identity = _identity(trainer)
    metadata = {"format": FORMAT, "steps": str(arrays["steps"]), "micro": str(arrays["micro"]),
                "draws": str(arrays.get("draws", 0)),
                "scaler": json.dumps(arrays.get("scaler")),
                "pending": str(len(arrays["pending"])), "identity": json.dumps(identity),
                "digest": _digest(identity)}
    return write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata),
                      force=force)


def load_checkpoint(trainer, path) -> None:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = str(path)
    try:
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(path)
    except FileNotFoundError as exc:
        raise AnychipError(f"{path}: no such checkpoint.") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise AnychipError(f"{path}: not a readable safetensors checkpoint ({exc}).") from exc
    if metadata.get("format") != FORMAT:
        raise AnychipError(f"{path}: not an anychip training checkpoint (format "
                           f"{metadata.get('format')!r}); write one with trainer.save_checkpoint.")
    mine = _identity(trainer)
    if metadata.get("digest") != _digest(mine):
        theirs = json.loads(metadata.get("identity", "{}"))
        differ = [k for k in mine if theirs.get(k) != mine[k]] or ["content"]
        raise AnychipError(f"{path}: the checkpoint belongs to a different training setup "
                           f"({', '.join(differ)} differ); compile the trainer with the same "
                           f"model, loss, optimizer, schedule and accumulation.")
    plan = trainer.plan
    try:
        arrays = {
            "params": [tensors[f"params/{k}"] for k in plan["params"]],
            "states": [tensors[f"states/{k}"] for k in plan["states"]],
            "optim": [tensors[f"optim/{i}"] for i in range(int(plan["optim_count"]))],
            "fixed": {k: tensors[f"fixed/{k}"] for k in trainer._fixed},
            "pending": [tensors[f"pending/{i}"] for i in range(int(metadata["pending"]))],
            "steps": int(metadata["steps"]), "micro": int(metadata["micro"]),
            "draws": int(metadata.get("draws", 0)),
            "scaler": json.loads(metadata.get("scaler", "null"))}
    except (KeyError, ValueError) as exc:
        raise AnychipError(f"{path}: the checkpoint is incomplete ({exc} missing); write it "
                           f"again.") from exc
    trainer._restore(arrays)
