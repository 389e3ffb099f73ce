"""The two functions a causal LM is split into, as torch modules ready for export.

    prefill(input_ids [B,P], position_ids [B,P], attention_mask [B,P])
        -> next_token [B,1] (or logits [B,V]), k_cache, v_cache [L,B,Hkv,S,D]
    decode(input_ids [B,1], position_ids [B,1], cache_index [1], attention_mask [B,S],
           k_cache, v_cache) -> next_token [B,1] (or logits [B,V]), k_cache, v_cache

S is max_seq_len. Prompts are left-padded to P (as Hugging Face pads a batch for generation),
so every row's prompt ends at slot P-1 and a decode step writes the same slot for the whole
batch: the cache index is one scalar. Position ids come from the host (cumulative sum of the
attention mask, as `generate` computes them), so padded rows get the positions HF gives them.

The 4-D additive mask is built inside the graph from the 2-D padding mask; HF's mask helpers
return a 4-D mask as is. Masked scores get -1e4 rather than the dtype's minimum: a float16
target holds -1e4, while float32's minimum becomes -inf there and a fully masked row (a padded
prompt position) would turn into NaN and poison its cache slot. exp(-1e4) underflows to 0
in fp32, so visible rows see exactly the probabilities HF computes.

Greedy decoding takes the argmax inside the compiled function, so a step returns one token per
row, not the [B, V] logits. The logits variant exists for sampling on the host; the "both"
variant (token and logits) lets a parity run get free-running tokens and per-step logits from
one compiled pair.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .static_cache import FunctionalStaticCache

MASK_VALUE = -1e4


def _cache_kwarg(model: nn.Module) -> str:
    """transformers 5 renamed `past_key_values` to `cache` (the old name is deprecated)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class _Step(nn.Module):
    def __init__(self, model: nn.Module, num_layers: int, max_len: int, output: str):
        super().__init__()
        self.model = model
        self.num_layers = num_layers
        self.max_len = max_len
        self.output = output  # "token", "logits" or "both" (token then logits: parity runs)
        self._cache_kw = _cache_kwarg(model)
        self._keep = "logits_to_keep" in inspect.signature(model.forward).parameters

    def _run(self, input_ids, position_ids, mask4d, cache):
        dtype = next(self.model.parameters()).dtype
        additive = torch.where(mask4d, torch.zeros((), dtype=dtype),
                               torch.full((), MASK_VALUE, dtype=dtype))
        kwargs = {"input_ids": input_ids, "position_ids": position_ids,
                  "attention_mask": additive, self._cache_kw: cache, "use_cache": True,
                  "return_dict": True}
        if self._keep:
            kwargs["logits_to_keep"] = 1
        logits = self.model(**kwargs).logits[:, -1, :].float()
        k, v = cache.stacked()
        token = torch.argmax(logits, dim=-1, keepdim=True)
        if self.output == "logits":
            return logits, k, v
        if self.output == "both":
            return token, logits, k, v
        return token, k, v


class PrefillStep(_Step):
    """Prompt (left-padded to a fixed length P) -> first new token and the filled cache."""

    def forward(self, input_ids, position_ids, attention_mask):
        p = input_ids.shape[1]
        keys = attention_mask.bool()[:, None, None, :]                       # [B,1,1,P]
        causal = torch.ones(p, p, dtype=torch.bool, device=input_ids.device).tril()
        visible = keys & causal[None, None]                                   # [B,1,P,P]
        visible = torch.nn.functional.pad(visible, (0, self.max_len - p))     # [B,1,P,S]
        cache = FunctionalStaticCache(self.num_layers, max_len=self.max_len)
        return self._run(input_ids, position_ids, visible, cache)


class DecodeStep(_Step):
    """One token per row at cache slot `cache_index` -> next token and the updated cache."""

    def forward(self, input_ids, position_ids, cache_index, attention_mask, k_cache, v_cache):
        slots = torch.arange(self.max_len, device=input_ids.device)
        slot = slots == cache_index.reshape(())                              # [S] one-hot
        visible = attention_mask.bool()[:, None, None, :]                    # [B,1,1,S]
        cache = FunctionalStaticCache(self.num_layers, k_cache, v_cache, slot)
        return self._run(input_ids, position_ids, visible, cache)
