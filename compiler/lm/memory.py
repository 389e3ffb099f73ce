"""How much memory a generation needs, per chip profile: weights, KV cache per token, and the
longest context that fits.

Weights and cache are counted at the model's own precision (the dtype its parameters have,
which is the dtype the exported graphs carry at their boundary and the cache is stored in).
The KV cache holds, per token and per sequence, a key and a value row of every layer:
2 x layers x kv_heads x head_dim elements. The longest context is (memory - weights) / (cache
bytes per token x batch), from the profile's `memory.size_gb` (the host's RAM for the cpu
profile, which has none); activations and the runtime's own buffers are not counted, so it is
an upper bound (the model's own position limit, `model_max_positions`, is reported beside it).
A memory size the profile marks uncertain is flagged.
"""

from __future__ import annotations

import os

import numpy as np

GIB = 1 << 30


def weight_bytes(model) -> int:
    seen, total = set(), 0
    for p in list(model.parameters()) + list(model.buffers()):
        if p.data_ptr() in seen:       # tied embeddings count once
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total


def kv_bytes_per_token(shape) -> int:
    item = 2 if shape.dtype == "bfloat16" else np.dtype(shape.dtype).itemsize
    return 2 * shape.num_layers * shape.kv_heads * shape.head_dim * item


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_table(model, shape, batch: int = 1, targets=None) -> list[dict]:
    from ..registry import profiles

    weights = weight_bytes(model)
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions",
                                                                          None)
    per_token = kv_bytes_per_token(shape)
    rows = []
    for name, profile in sorted(profiles().items()):
        if targets and name not in targets:
            continue
        size_gb = profile.get("memory.size_gb")
        source = "profile"
        if size_gb is None and profile.family == "cpu":
            mem, source = host_memory_bytes(), "host RAM"
        else:
            mem = int(float(size_gb) * GIB) if size_gb is not None else None
        if mem is not None and "memory.size_gb" in profile.uncertain:
            source = "profile (uncertain)"
        longest = None if mem is None else max(0, (mem - weights) // (per_token * batch))
        rows.append({"target": name, "family": profile.family, "dtype": shape.dtype,
                     "weight_bytes": weights, "kv_bytes_per_token": per_token,
                     "memory_bytes": mem, "memory_source": source if mem else "unknown",
                     "batch": batch, "max_context_tokens": longest,
                     "model_max_positions": limit})
    return rows


def format_table(rows: list[dict]) -> str:
    from ..text_table import table

    def mib(n):
        return "?" if n is None else f"{n / (1 << 20):.2f} MiB"

    body = [[r["target"], r["dtype"], mib(r["weight_bytes"]), f"{r['kv_bytes_per_token']} B",
             "?" if r["memory_bytes"] is None else f"{r['memory_bytes'] / GIB:.0f} GiB",
             r["memory_source"],
             "?" if r["max_context_tokens"] is None else f"{r['max_context_tokens']:,}"]
            for r in rows]
    return table(["target", "dtype", "weights", "KV / token", "memory", "from",
                  f"longest context (batch {rows[0]['batch'] if rows else 1})"], body)
