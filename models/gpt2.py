"""zoo:gpt2: a small GPT-2-style decoder, defined here.

Token and learned position embeddings, LAYERS pre-LN blocks of causal multi-head
self-attention (one fused query-key-value projection, as GPT-2's c_attn) and a GELU MLP with
GPT-2's tanh approximation, a final LayerNorm and an LM head tied to the token embedding;
batch 1, sequence SEQ, int64 input_ids in [0, VOCAB) -> logits. Attention is written out
(MatMul, Softmax) rather than through scaled_dot_product_attention, so the export stays at
opset-20 primitives that `tvm.relax.frontend.onnx` imports.

The causal mask is additive: 0 on and below the diagonal, -1e4 above it, as the original
GPT-2 code masks. -1e4 is finite in fp16 (float32's finfo.min or -inf becomes -inf there, and
inf arithmetic such as -inf - -inf is NaN), and after the softmax's max subtraction exp(-1e4)
is 0 in any format, so a reduced-precision target computes the same mask.

Initialisation keeps the numerics meaningful: projections are normal with std 1/sqrt(fan_in),
so query-key logits have a standard deviation near 1 (attention neither uniform nor one-hot);
LayerNorm gains and biases are random. The token embedding, which is also the LM head, has
std 0.5/sqrt(HIDDEN), so logits have a standard deviation near 0.5 (GPT-2's own initialisation,
std 0.02, gives 0.3): at std 0.25 (logits of std 4) an fp16 run missed fp16's tolerance
(atol 0.01) on 0.1-0.3% of the 1M logits, in torch's own fp16 forward as on ascend-910b,
since fp16 keeps the hidden state to about 1e-3 relative. Position embeddings have GPT-2's
std 0.01. Everything is seeded.
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
MLP = 4 * HIDDEN
MASK_VALUE = -1e4
DESCRIPTION = (f"GPT-2-style decoder (torch): {LAYERS} pre-LN layers, hidden {HIDDEN}, {HEADS} "
               f"heads, causal, tied LM head, vocab {VOCAB}; input_ids 1x{SEQ} int64 -> "
               f"1x{SEQ}x{VOCAB} logits")
INPUT_NAMES = ["input_ids"]
OUTPUT_NAMES = ["logits"]
INPUT_RANGES = {"input_ids": (0, VOCAB)}       # half-open: token ids 0 .. VOCAB-1
SEED = 2019


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, seq: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        above = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
        mask = torch.zeros(seq, seq).masked_fill(above, MASK_VALUE)
        self.register_buffer("mask", mask.view(1, 1, seq, seq), persistent=False)

    def _split(self, x):                       # (b, s, h) -> (b, heads, s, head_dim)
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + self.mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        b, _, s, _ = context.shape
        return self.out(context.transpose(1, 2).reshape(b, s, -1))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp: int, seq: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = CausalSelfAttention(hidden, heads, seq)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp, hidden))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT2(nn.Module):
    def __init__(self, vocab=VOCAB, seq=SEQ, hidden=HIDDEN, heads=HEADS, layers=LAYERS, mlp=MLP):
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(seq, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads, mlp, seq) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.register_buffer("position_ids", torch.arange(seq).unsqueeze(0), persistent=False)

    def forward(self, input_ids):
        positions = self.position_ids[:, : input_ids.shape[1]]
        x = self.tokens(input_ids) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        return torch.matmul(self.norm(x), self.tokens.weight.t())    # tied LM head


def build_module() -> nn.Module:
    gen = torch.Generator().manual_seed(SEED)
    model = GPT2()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 1.0 / math.sqrt(m.in_features), generator=gen)
                m.bias.normal_(0.0, 0.02, generator=gen)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
        model.tokens.weight.normal_(0.0, 0.5 / math.sqrt(HIDDEN), generator=gen)
        model.positions.weight.normal_(0.0, 0.01, generator=gen)
    return model.eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(SEED + 1)
    return (torch.randint(0, VOCAB, (1, SEQ), generator=gen, dtype=torch.int64),)
