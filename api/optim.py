"""anychip.optim: optimizers with torch's update rules, compiled into the train step.

    anychip.optim.SGD(lr, momentum=0, weight_decay=0, clip_grad_norm=None)
    anychip.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, clip_grad_norm=None)
    anychip.optim.AdamW(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, ...)
    anychip.optim.schedules: linear_warmup, cosine, step (learning rate per step)
"""

from anychip.compiler.training import schedules
from anychip.compiler.training.optim import SGD, Adam, AdamW

__all__ = ["SGD", "Adam", "AdamW", "schedules"]
