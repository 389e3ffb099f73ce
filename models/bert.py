"""zoo:bert: a small BERT-style encoder, defined here.

Token and position embeddings, LayerNorm, LAYERS post-LN encoder layers of multi-head
self-attention and a GELU feed-forward block; batch 1, sequence SEQ, int64 input_ids in
[0, VOCAB). Attention is written out (MatMul, Softmax) rather than through
scaled_dot_product_attention, so the export stays at opset-20 primitives that
`tvm.relax.frontend.onnx` imports (it cannot import opset 23's Attention).

Initialisation is chosen so attention is neither uniform nor one-hot: projections are
normal with std 1/sqrt(fan_in), so query-key logits have a standard deviation near 1; LayerNorm
gains and biases are random so a wrong LayerNorm kernel shows. Everything is seeded.
"""

from __future__ import annotations

import math

import torch
from torch import nn

VOCAB = 8192
SEQ = 128
HIDDEN = 256
HEADS = 4
LAYERS = 4
FFN = 4 * HIDDEN
DESCRIPTION = (f"BERT-style encoder (torch): {LAYERS} layers, hidden {HIDDEN}, {HEADS} heads, "
               f"FFN {FFN}, vocab {VOCAB}; input_ids 1x{SEQ} int64 -> 1x{SEQ}x{HIDDEN}")
INPUT_NAMES = ["input_ids"]
OUTPUT_NAMES = ["last_hidden_state"]
INPUT_RANGES = {"input_ids": (0, VOCAB)}       # half-open: token ids 0 .. VOCAB-1
SEED = 2018


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, x):                       # (b, s, h) -> (b, heads, s, head_dim)
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        b, _, s, _ = context.shape
        return self.out(context.transpose(1, 2).reshape(b, s, -1))


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.attention = SelfAttention(hidden, heads)
        self.norm1 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, x):
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.ffn(x))


class Bert(nn.Module):
    def __init__(self, vocab=VOCAB, seq=SEQ, hidden=HIDDEN, heads=HEADS, layers=LAYERS, ffn=FFN):
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(seq, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ffn) for _ in range(layers))
        self.register_buffer("position_ids", torch.arange(seq).unsqueeze(0), persistent=False)

    def forward(self, input_ids):
        positions = self.position_ids[:, : input_ids.shape[1]]
        x = self.norm(self.tokens(input_ids) + self.positions(positions))
        for layer in self.layers:
            x = layer(x)
        return x


def build_module() -> nn.Module:
    gen = torch.Generator().manual_seed(SEED)
    model = Bert()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 1.0 / math.sqrt(m.in_features), generator=gen)
                m.bias.normal_(0.0, 0.02, generator=gen)
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(0.0, 1.0, generator=gen)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
    return model.eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(SEED + 1)
    return (torch.randint(0, VOCAB, (1, SEQ), generator=gen, dtype=torch.int64),)
