"""A static, max-length KV cache that Hugging Face attention layers write into functionally.

Why static (and not TVM's paged KV cache): a cache of fixed shape [layers, batch, kv_heads,
max_len, head_dim], passed in and returned by both the prefill and the decode function (as
onnxruntime-genai's shared past/present buffer), keeps every tensor of both functions at a
static shape. Static shapes are what every anychip family lowers today: the npu simulator tiles
its cube kernels for fixed shapes, the GPU families compile fixed grids, and the ONNX -> Relax
importer loses symbolic dimensions after a Transpose. A paged cache needs runtime-managed pages
(a TVM runtime object), which neither the ONNX path nor the compile-only families carry.

Why functional: Hugging Face's own StaticCache writes with `index_copy_` into buffers it owns,
a mutation torch.onnx cannot express as a graph output. Here a decode step's new key/value row
is selected into the incoming cache with a one-hot row mask (ONNX Where: exact, and available
on every backend); a prefill starts at slot 0, so its rows are padded with zeros to max_len (no
cache input at all). The updated tensors are collected and returned as graph outputs.
"""

from __future__ import annotations

import torch

try:  # transformers >= 4.56: attention layers accept any Cache subclass
    from transformers.cache_utils import Cache as _HFCache
except ImportError:  # pragma: no cover - transformers missing
    _HFCache = object


class FunctionalStaticCache(_HFCache):
    """Per-layer K/V tensors [B, Hkv, max_len, D]; `update` returns the whole updated cache.

    Prefill: `keys`/`values` are None and `max_len` is given; the rows computed are padded with
    zeros to max_len. Decode: `slot` is a bool one-hot [max_len] (the cache index is a runtime
    input) and the new row replaces that slot of the incoming `keys`/`values` [L, B, Hkv, S, D].
    """

    is_compileable = True

    def __init__(self, num_layers: int, keys=None, values=None, slot=None, max_len: int = 0):
        # Deliberately not Cache.__init__: no lazily created layer objects, no offloading.
        self.layers = []
        self.layer_class_to_replicate = None
        self.offloading = False
        self._keys = list(keys.unbind(0)) if keys is not None else [None] * num_layers
        self._values = list(values.unbind(0)) if values is not None else [None] * num_layers
        self._slot = slot
        self._max_len = max_len
        self.new_keys: list[torch.Tensor | None] = [None] * num_layers
        self.new_values: list[torch.Tensor | None] = [None] * num_layers

    def __len__(self) -> int:
        return len(self._keys)

    def _write(self, old, new: torch.Tensor) -> torch.Tensor:
        if old is None:  # prefill from slot 0: pad the computed rows to max_len
            return torch.nn.functional.pad(new, (0, 0, 0, self._max_len - new.shape[2]))
        return torch.where(self._slot.view(1, 1, -1, 1), new.to(old.dtype), old)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        k = self._write(self._keys[layer_idx], key_states)
        v = self._write(self._values[layer_idx], value_states)
        self.new_keys[layer_idx], self.new_values[layer_idx] = k, v
        return k, v

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # position ids are always given explicitly

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [i for i, k in enumerate(self.new_keys) if k is None]
        if missing:
            from ..errors import AnychipError

            raise AnychipError(f"layer {missing[0]} never wrote its KV cache (a sliding-window, "
                               f"linear-attention or cross-attention layer?); only full causal "
                               f"self-attention decoders are supported.")
        return torch.stack(self.new_keys), torch.stack(self.new_values)
