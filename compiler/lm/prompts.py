"""Prompt batches: validation (one line, exit 2) and left padding as Hugging Face does it.

A batch arrives as a list of token-id lists of different lengths, or as a 2-D array with an
optional attention mask (already left-padded, as a tokenizer with padding_side="left" gives).
Nothing is generated until every check has passed, so bad input never yields a partial result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AnychipError


@dataclass
class Batch:
    ids: np.ndarray      # [B, P] int64, left-padded
    mask: np.ndarray     # [B, P] int64, 0 on padding

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])


def _as_rows(input_ids) -> list[list[int]] | np.ndarray:
    try:
        import torch

        if isinstance(input_ids, torch.Tensor):
            input_ids = input_ids.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(input_ids, np.ndarray):
        return input_ids[None] if input_ids.ndim == 1 else input_ids
    rows = list(input_ids)
    if rows and all(isinstance(t, (int, np.integer)) for t in rows):
        rows = [rows]
    return [list(r) for r in rows]


def left_pad(input_ids, attention_mask, pad_id, vocab: int, label: str) -> Batch:
    """Prompts -> left-padded ids and mask; refuses empty prompts and ids outside the vocab."""
    pad = 0 if pad_id is None else int(pad_id)
    rows = _as_rows(input_ids)
    if isinstance(rows, np.ndarray):
        if rows.ndim != 2 or not np.issubdtype(rows.dtype, np.integer):
            raise AnychipError(f"{label}: input_ids must be integer token ids of shape [batch, "
                               f"length], got {rows.dtype} {tuple(rows.shape)}.")
        ids = rows.astype(np.int64)
        mask = (np.ones_like(ids) if attention_mask is None else
                np.asarray(attention_mask).astype(np.int64))
        if mask.shape != ids.shape:
            raise AnychipError(f"{label}: attention_mask shape {mask.shape} differs from "
                               f"input_ids {ids.shape}.")
    else:
        if attention_mask is not None:
            raise AnychipError(f"{label}: attention_mask goes with a 2-D input_ids array; "
                               f"give prompts of different lengths as a list of lists alone.")
        width = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), pad, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, row in enumerate(rows):
            if row:
                ids[i, width - len(row):] = np.asarray(row, np.int64)
                mask[i, width - len(row):] = 1
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise AnychipError(f"{label}: the prompt is empty; give at least one token id.")
    empty = np.flatnonzero(mask.sum(axis=1) == 0)
    if empty.size:
        raise AnychipError(f"{label}: prompt {int(empty[0])} of the batch is empty (all padding);"
                           f" give at least one token id per prompt.")
    visible = ids[mask.astype(bool)]
    bad = visible[(visible < 0) | (visible >= vocab)]
    if bad.size:
        raise AnychipError(f"{label}: token id {int(bad[0])} is outside the vocabulary "
                           f"(0..{vocab - 1}); check the tokenizer belongs to this model.")
    if ((mask[:, 1:] - mask[:, :-1]) < 0).any():
        raise AnychipError(f"{label}: attention_mask has padding after a token; pad prompts on "
                           f"the left (tokenizer padding_side='left').")
    return Batch(ids, mask)


def check_budget(prompt_len: int, max_new_tokens: int, max_seq_len: int, label: str) -> None:
    """prompt + new tokens must fit the static cache; checked before anything runs."""
    if int(max_new_tokens) < 1:
        raise AnychipError(f"{label}: max_new_tokens must be at least 1, got {max_new_tokens}.")
    if prompt_len >= max_seq_len:
        raise AnychipError(f"{label}: the prompt has {prompt_len} tokens, max_seq_len is "
                           f"{max_seq_len}; shorten the prompt or compile with a larger "
                           f"max_seq_len.")
    if prompt_len + max_new_tokens > max_seq_len:
        raise AnychipError(f"{label}: {prompt_len} prompt tokens + max_new_tokens "
                           f"{max_new_tokens} exceed max_seq_len {max_seq_len}; ask for at most "
                           f"{max_seq_len - prompt_len} new tokens or compile with a larger "
                           f"max_seq_len.")
