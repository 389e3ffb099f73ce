"""Training on any target: the inference graph plus a loss, TVM's gradient and the optimizer,
compiled into one train step per backend (design.md §1, issue 6).

    trainer = anychip.compile_training(model, example_inputs=(x,), loss="cross_entropy",
                                       optimizer=anychip.optim.Adam(lr=1e-3), target="cpu")
    loss = trainer.step(x, y); trainer.save("m.train"); trainer = anychip.load_training("m.train")
"""

from .build import compile_training
from .optim import SGD, Adam
from .saved import load_trainer as load_training
from .trainer import Trainer

__all__ = ["compile_training", "load_training", "Trainer", "SGD", "Adam"]
