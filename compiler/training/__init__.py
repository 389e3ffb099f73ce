"""Training on any target: the inference graph plus a loss, TVM's gradient and the optimizer,
compiled into one train step per backend (docs/architecture.md, issue 6).

    trainer = anychip.compile_training(model, example_inputs=(x,), loss="cross_entropy",
                                       optimizer=anychip.optim.Adam(lr=1e-3), target="cpu")
    loss = trainer.step(x, y); trainer.save("m.train"); trainer = anychip.load_training("m.train")

Names are resolved lazily so that `anychip.optim` costs no onnx/TVM import.
"""

from __future__ import annotations

from .optim import SGD, Adam, AdamW

_LAZY = {"compile_training": ("build", "compile_training"),
         "load_training": ("trainer", "load_trainer"),
         "Trainer": ("trainer", "Trainer")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SGD", "Adam", "AdamW", "Trainer", "compile_training", "load_training"]
