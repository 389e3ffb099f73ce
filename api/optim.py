"""anychip.optim: optimizers with torch's update rules, compiled into the train step.

    anychip.optim.SGD(lr, momentum=0, weight_decay=0)
    anychip.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
"""

from anychip.compiler.training.optim import SGD, Adam

__all__ = ["SGD", "Adam"]
