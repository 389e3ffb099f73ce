"""Seeded sampling on the host: temperature, then top-k, then top-p (Hugging Face's order).

Sampling needs the logits and a random stream, so the sampling variant of the decode function
returns logits [B, V]; greedy decoding keeps the argmax in the compiled code. The random
stream is numpy's PCG64 seeded once per generate call: the same seed gives the same tokens on
every target whose logits agree; it does not reproduce torch's random stream (HF's sampling).
"""

from __future__ import annotations

import numpy as np

from ..errors import AnychipError


class Sampler:
    def __init__(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int = 0):
        if not temperature > 0:
            raise AnychipError(f"temperature must be > 0, got {temperature}; use do_sample=False "
                               f"for greedy decoding.")
        if not 0 < top_p <= 1:
            raise AnychipError(f"top_p must lie in (0, 1], got {top_p}.")
        if int(top_k) < 0:
            raise AnychipError(f"top_k must be >= 0 (0 = off), got {top_k}.")
        self.temperature, self.top_k, self.top_p = float(temperature), int(top_k), float(top_p)
        self.rng = np.random.Generator(np.random.PCG64(int(seed)))

    def filtered_probs(self, logits: np.ndarray) -> np.ndarray:
        scores = logits.astype(np.float64) / self.temperature
        if self.top_k and self.top_k < scores.shape[-1]:
            kth = np.sort(scores, axis=-1)[:, -self.top_k][:, None]
            scores = np.where(scores < kth, -np.inf, scores)
        if self.top_p < 1.0:
            order = np.argsort(scores, axis=-1, kind="stable")            # ascending, as HF
            sorted_scores = np.take_along_axis(scores, order, axis=-1)
            probs = _softmax(sorted_scores)
            cum = np.cumsum(probs, axis=-1)
            remove = cum <= 1 - self.top_p
            remove[:, -1] = False                                            # keep the best
            drop = np.zeros_like(remove)
            np.put_along_axis(drop, order, remove, axis=-1)
            scores = np.where(drop, -np.inf, scores)
        return _softmax(scores)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        probs = self.filtered_probs(logits)
        u = self.rng.random((probs.shape[0], 1))
        cdf = np.cumsum(probs, axis=-1)
        return np.minimum((cdf < u * cdf[:, -1:]).sum(axis=-1), probs.shape[-1] - 1).astype(
            np.int64)


def _softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=-1, keepdims=True)
