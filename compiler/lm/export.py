"""Export a causal LM's prefill and decode steps to ONNX at static shapes.

One export per (function, batch, prefill length, output kind): every tensor is static, so
the same ONNX pair compiles for every family (see static_cache.py for why). The exports go
through anychip's own torch exporter (torch.onnx dynamo, opset 20), whose failures are one
line; here the common reasons a Hugging Face model does not fit get a line saying what to
change before the exporter is even tried.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch

from ..errors import AnychipError
from ..torch_export import export_torch
from .steps import DecodeStep, PrefillStep

PREFILL_INPUTS = ["input_ids", "position_ids", "attention_mask"]
DECODE_INPUTS = ["input_ids", "position_ids", "cache_index", "attention_mask", "k_cache",
                 "v_cache"]


@dataclass(frozen=True)
class LMShape:
    """What the cache looks like: learned from one eager prefill of the wrapped model."""

    num_layers: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype: str          # numpy name of the cache / weights dtype

    def cache_shape(self, batch: int, max_len: int) -> tuple[int, ...]:
        return (self.num_layers, batch, self.kv_heads, max_len, self.head_dim)


def check_supported(model: torch.nn.Module, label: str, max_len: int) -> None:
    """Refuse, in one line each, what the static-cache split cannot express."""
    config = getattr(model, "config", None)
    if config is None or not isinstance(model, torch.nn.Module):
        raise AnychipError(f"{label}: not a Hugging Face causal LM (no .config); give a "
                           f"transformers *ForCausalLM model, a local model folder or config.json.")
    if getattr(config, "is_encoder_decoder", False):
        raise AnychipError(f"{label}: encoder-decoder models are not supported; give a "
                           f"decoder-only causal LM.")
    layer_types = set(getattr(config, "layer_types", None) or [])
    odd = sorted(layer_types - {"full_attention", "sliding_attention"})
    if odd:
        raise AnychipError(f"{label}: layers of type {', '.join(odd)} need a recurrent or "
                           f"special cache; only (sliding) causal self-attention is supported.")
    window = getattr(config, "sliding_window", None)
    sliding = "sliding_attention" in layer_types or (
        window and getattr(config, "use_sliding_window", True) and not layer_types)
    if sliding and window and int(window) < max_len:
        raise AnychipError(f"{label}: sliding-window attention ({window} tokens) is not "
                           f"expressed by the static cache; use max_seq_len <= {window}.")


def probe(model: torch.nn.Module, max_len: int) -> LMShape:
    """Run a 2-token prefill eagerly to learn the cache layout (GQA heads, head_dim)."""
    layers = int(model.config.num_hidden_layers)
    step = PrefillStep(model, layers, max_len, "logits").eval()
    ids = torch.zeros(1, 2, dtype=torch.long)
    try:
        with torch.no_grad():
            logits, k, _ = step(ids, torch.arange(2)[None], torch.ones(1, 2, dtype=torch.long))
    except AnychipError:
        raise
    except Exception as exc:  # the model's own code: any error type, reported in one line
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        frame = f" in {where.tb_frame.f_code.co_name}()" if where is not None else ""
        raise AnychipError(
            f"{type(model).__name__}: the forward with a static cache failed{frame}: "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
            f"; supported are decoders whose attention calls cache.update(k, v, layer_idx) and "
            f"that take position_ids and a 4-D attention mask (ALiBi models that build their "
            f"bias from a 2-D mask, e.g. Bloom, are not).") from exc
    return LMShape(layers, int(k.shape[2]), int(k.shape[4]), int(logits.shape[-1]),
                   str(k.dtype).replace("torch.", ""))


def export_prefill(model, shape: LMShape, batch: int, length: int, max_len: int,
                   output: str) -> onnx.ModelProto:
    step = PrefillStep(model, shape.num_layers, max_len, output)
    ids = torch.zeros(batch, length, dtype=torch.long)
    pos = torch.arange(length).repeat(batch, 1)
    mask = torch.ones(batch, length, dtype=torch.long)
    return _export(step, (ids, pos, mask), PREFILL_INPUTS, output)


def export_decode(model, shape: LMShape, batch: int, max_len: int, output: str) -> onnx.ModelProto:
    step = DecodeStep(model, shape.num_layers, max_len, output)
    dtype = getattr(torch, shape.dtype)
    cache = torch.zeros(shape.cache_shape(batch, max_len), dtype=dtype)
    mask = torch.zeros(batch, max_len, dtype=torch.long)
    mask[:, :2] = 1
    args = (torch.zeros(batch, 1, dtype=torch.long), torch.ones(batch, 1, dtype=torch.long),
            torch.tensor([1]), mask, cache, cache.clone())
    return _export(step, args, DECODE_INPUTS, output)


def _export(step, args, inputs, output) -> onnx.ModelProto:
    heads = {"token": ["next_token"], "logits": ["logits"], "both": ["next_token", "logits"]}
    outputs = heads[output] + ["k_cache_out", "v_cache_out"]
    proto = export_torch(step.eval(), args, inputs, outputs)
    # the exporter drops inputs that the graph does not read (a model without position ids,
    # e.g. ALiBi): the runner feeds only what the graph declares
    return proto


def graph_inputs(art) -> set[str]:
    return {s.name for s in art.inputs}


def to_numpy_dtype(name: str) -> np.dtype:
    return np.dtype("float32") if name == "bfloat16" else np.dtype(name)
