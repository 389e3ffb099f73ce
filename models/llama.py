"""zoo:llama: a small Llama-style decoder, defined here.

Token embedding, LAYERS blocks of RMSNorm, causal grouped-query self-attention with rotary
position embeddings (HEADS query heads sharing KV_HEADS key-value heads) and a SwiGLU MLP, a
final RMSNorm and an untied LM head; no biases anywhere, as Llama. Batch 1, sequence SEQ,
int64 input_ids in [0, VOCAB) -> logits.

Export-friendly choices: RMSNorm and the rotation (rotate-half, as Hugging Face's Llama) are
written out, so the opset-20 export needs no RMSNormalization or RotaryEmbedding op (opset 23);
the rotary cos/sin tables are precomputed buffers that export as initializers; each key-value
head is repeated for its query group with expand + reshape; attention is MatMul and Softmax
(no scaled_dot_product_attention). The causal mask is additive with -1e4 rather than -inf, a
value fp16 holds, so a reduced-precision target computes the same mask (see models/gpt2.py).

Initialisation: projections are normal with std 1/sqrt(fan_in), so query-key logits have a
standard deviation near 1 (attention neither uniform nor one-hot); RMSNorm gains are random.
The LM head has std 0.5/sqrt(HIDDEN), logits a standard deviation near 0.5: fp16 keeps the
hidden state to about 1.4e-3 relative, so logits near 1 missed fp16's tolerance (atol 0.01) on
a few of the 1M values, in torch's own fp16 forward as on ascend-910b. Everything is seeded.
"""

from __future__ import annotations

import math

import torch
from torch import nn

VOCAB = 8192
SEQ = 128
HIDDEN = 256
HEADS = 4
KV_HEADS = 2
LAYERS = 4
MLP = 704                      # about 8/3 of HIDDEN, rounded up to a multiple of 64, as Llama
ROPE_THETA = 10000.0
EPS = 1e-5
MASK_VALUE = -1e4
DESCRIPTION = (f"Llama-style decoder (torch): {LAYERS} layers, hidden {HIDDEN}, {HEADS} query / "
               f"{KV_HEADS} key-value heads, RoPE, RMSNorm, SwiGLU {MLP}, vocab {VOCAB}; "
               f"input_ids 1x{SEQ} int64 -> 1x{SEQ}x{VOCAB} logits")
INPUT_NAMES = ["input_ids"]
OUTPUT_NAMES = ["logits"]
INPUT_RANGES = {"input_ids": (0, VOCAB)}       # half-open: token ids 0 .. VOCAB-1
SEED = 2023


class RMSNorm(nn.Module):
    def __init__(self, hidden: int, eps: float = EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, seq: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        above = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
        mask = torch.zeros(seq, seq).masked_fill(above, MASK_VALUE)
        self.register_buffer("mask", mask.view(1, 1, seq, seq), persistent=False)

    def _split(self, x, heads):                # (b, s, heads*d) -> (b, heads, s, d)
        b, s, _ = x.shape
        return x.view(b, s, heads, self.head_dim).transpose(1, 2)

    def _repeat_kv(self, x):                   # (b, kv, s, d) -> (b, heads, s, d)
        b, kv, s, d = x.shape
        group = self.heads // kv
        return x[:, :, None].expand(b, kv, group, s, d).reshape(b, kv * group, s, d)

    def forward(self, x, cos, sin):
        q = self._split(self.q_proj(x), self.heads)
        k = self._split(self.k_proj(x), self.kv_heads)
        v = self._split(self.v_proj(x), self.kv_heads)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k, v = self._repeat_kv(k), self._repeat_kv(v)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + self.mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        b, _, s, _ = context.shape
        return self.o_proj(context.transpose(1, 2).reshape(b, s, -1))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, mlp: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, mlp, bias=False)
        self.up_proj = nn.Linear(hidden, mlp, bias=False)
        self.down_proj = nn.Linear(mlp, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, mlp: int, seq: int):
        super().__init__()
        self.input_norm = RMSNorm(hidden)
        self.attention = Attention(hidden, heads, kv_heads, seq)
        self.post_attention_norm = RMSNorm(hidden)
        self.mlp = SwiGLU(hidden, mlp)

    def forward(self, x, cos, sin):
        x = x + self.attention(self.input_norm(x), cos, sin)
        return x + self.mlp(self.post_attention_norm(x))


class Llama(nn.Module):
    def __init__(self, vocab=VOCAB, seq=SEQ, hidden=HIDDEN, heads=HEADS, kv_heads=KV_HEADS,
                 layers=LAYERS, mlp=MLP):
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads, kv_heads, mlp, seq)
                                    for _ in range(layers))
        self.norm = RMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        head_dim = hidden // heads
        inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float64)
                                        / head_dim)
        angles = torch.outer(torch.arange(seq, dtype=torch.float64), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)           # (seq, head_dim), rotate-half
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, input_ids):
        s = input_ids.shape[1]
        cos, sin = self.cos[:s], self.sin[:s]
        x = self.tokens(input_ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.lm_head(self.norm(x))


def build_module() -> nn.Module:
    gen = torch.Generator().manual_seed(SEED)
    model = Llama()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 1.0 / math.sqrt(m.in_features), generator=gen)
            elif isinstance(m, RMSNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
        model.tokens.weight.normal_(0.0, 0.5, generator=gen)
        model.lm_head.weight.normal_(0.0, 0.5 / math.sqrt(HIDDEN), generator=gen)
    return model.eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(SEED + 1)
    return (torch.randint(0, VOCAB, (1, SEQ), generator=gen, dtype=torch.int64),)
