"""zoo:vit: a small Vision Transformer (ViT-Tiny width, fewer layers), defined here.

A PATCHxPATCH convolution with stride PATCH embeds the 1x3xSIZExSIZE image as
(SIZE/PATCH)^2 patch tokens; a learned cls token is prepended and learned position embeddings
added; LAYERS pre-LN encoder blocks of multi-head self-attention and a GELU MLP; a final
LayerNorm and a linear classifier on the cls token -> NUM_CLASSES logits. Attention is
written out (MatMul, Softmax) rather than through scaled_dot_product_attention, so the export
stays at opset-20 primitives that `tvm.relax.frontend.onnx` imports.

Initialisation: the patch convolution and the projections are normal with std 1/sqrt(fan_in),
so query-key logits have a standard deviation near 1 (attention neither uniform nor one-hot);
LayerNorm gains and biases are random; cls token and position embeddings are normal with
std 0.5, on the scale of a patch embedding. Everything is seeded.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SIZE = 224
PATCH = 16
TOKENS = (SIZE // PATCH) ** 2 + 1              # patches and the cls token
HIDDEN = 192
HEADS = 3
LAYERS = 4
MLP = 4 * HIDDEN
NUM_CLASSES = 1000
DESCRIPTION = (f"ViT (torch): patch {PATCH} on 1x3x{SIZE}x{SIZE} ({TOKENS} tokens with cls), "
               f"{LAYERS} pre-LN layers, hidden {HIDDEN}, {HEADS} heads, MLP {MLP} "
               f"-> {NUM_CLASSES} logits")
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["logits"]
INPUT_RANGES: dict[str, tuple[int, int]] = {}
SEED = 2020


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, x):                       # (b, s, h) -> (b, heads, s, head_dim)
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        b, _, s, _ = context.shape
        return self.out(context.transpose(1, 2).reshape(b, s, -1))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = SelfAttention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp), nn.GELU(), nn.Linear(mlp, hidden))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, size=SIZE, patch=PATCH, hidden=HIDDEN, heads=HEADS, layers=LAYERS,
                 mlp=MLP, num_classes=NUM_CLASSES):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, hidden, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.positions = nn.Parameter(torch.zeros(1, (size // patch) ** 2 + 1, hidden))
        self.blocks = nn.ModuleList(Block(hidden, heads, mlp) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, image):
        x = self.patch_embed(image).flatten(2).transpose(1, 2)       # (b, patches, hidden)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.positions
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def build_module() -> nn.Module:
    gen = torch.Generator().manual_seed(SEED)
    model = ViT()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
                m.bias.normal_(0.0, 0.02, generator=gen)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
        model.cls_token.normal_(0.0, 0.5, generator=gen)
        model.positions.normal_(0.0, 0.5, generator=gen)
    return model.eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    return (torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(SEED + 1)),)
