"""Models for the training tests and the torch autograd reference the train step is compared
with: the zoo's mlp (zoo:mlp, batch 4, 64 -> 10), and a small ResNet-style CNN defined here
(zoo:resnet18 is 224x224 with 1000 classes, minutes per step on two cores here)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, features: int = 16, hidden: int = 32, classes: int = 5):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class Block(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn + shortcut (1x1 conv-bn when shapes change)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNetCNN(nn.Module):
    """A small ResNet-style CNN: stem, two basic blocks (one strided), global pool, linear."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.layer1 = Block(8, 8)
        self.layer2 = Block(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


class TiedRegressor(nn.Module):
    """Tied weights (two layers share one matrix), BatchNorm1d and Dropout(p=0), for mse."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.b.weight = self.a.weight
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.0)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.b(torch.tanh(self.a(x))))
        return self.out(self.drop(self.bn(h)))


class EncoderClassifier(nn.Module):
    """A BERT-style classifier from torch's own nn.TransformerEncoderLayer (dropout 0)."""

    def __init__(self, features: int = 8, width: int = 16, classes: int = 3):
        super().__init__()
        self.embed = nn.Linear(features, width)
        self.encoder = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0,
                                                  batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


class CausalLMLogits(nn.Module):
    """A transformers causal LM returning only its logits [batch, seq, vocab]; the attention
    mask is all ones (the exporter cannot trace transformers' mask inference from ids alone)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits


def tiny_llama(vocab: int = 32) -> nn.Module:
    """A seeded one-layer Llama (RMSNorm, rotary embeddings, SwiGLU, grouped-query attention)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, max_position_embeddings=16,
                                      attn_implementation="eager")
    return CausalLMLogits(transformers.LlamaForCausalLM(config).float())


class ImageLogits(nn.Module):
    """transformers' image classifiers return an output object; the train step needs logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


def tiny_vit(classes: int = 3) -> nn.Module:
    """A seeded one-layer ViT from transformers' code: conv patch embedding, class token,
    position embeddings, pre-norm attention and GELU MLP, 8x8 images in 2x2 patches."""
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=3, hidden_size=16,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32, num_labels=classes,
                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                    attn_implementation="eager")
    return ImageLogits(transformers.ViTForImageClassification(config).float())


def lm_batches(batch: int, seq: int, vocab: int, steps: int, seed: int = 1, distinct: int = 4):
    """(ids, labels) cycling over `distinct` seeded batches (so the loss can fall): labels are
    the ids shifted left, the last position ignored (-100)."""
    gen = torch.Generator().manual_seed(seed)
    pool = []
    for _ in range(distinct):
        ids = torch.randint(0, vocab, (batch, seq), generator=gen)
        labels = torch.cat([ids[:, 1:], torch.full((batch, 1), -100)], dim=1)
        pool.append((ids, labels))
    return [pool[i % distinct] for i in range(steps)]


def make_model(name: str) -> tuple[nn.Module, tuple, int]:
    """(torch module, input shape, classes) with seeded weights."""
    torch.manual_seed(0)
    if name == "zoo:mlp":
        from anychip import models

        zoo = models.build("mlp")
        return zoo.torch_module, tuple(zoo.example_inputs[0].shape), 10
    if name == "mlp":
        return MLP(), (8, 16), 5
    if name == "resnet":
        return ResNetCNN(), (8, 3, 8, 8), 5
    raise ValueError(name)


def batches(shape: tuple, classes: int, steps: int, seed: int = 1):
    """`steps` seeded (x, y) batches: float32 inputs, int64 class labels."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=gen), torch.randint(0, classes, (shape[0],),
                                                              generator=gen))
            for _ in range(steps)]


def torch_reference(model: nn.Module, optimizer, data, loss: str = "cross_entropy"):
    """Losses and final state_dict of torch autograd with the same optimizer rule."""
    ref = copy.deepcopy(model).train()
    opt = optimizer.to_torch(ref.parameters())
    def loss_fn(out, y):
        if loss == "token_cross_entropy":
            return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1),
                                               ignore_index=-100)
        return (nn.CrossEntropyLoss() if loss == "cross_entropy" else nn.MSELoss())(out, y)

    losses = []
    for x, y in data:
        opt.zero_grad()
        value = loss_fn(ref(x), y)
        value.backward()
        if getattr(optimizer, "clip_grad_norm", None):
            nn.utils.clip_grad_norm_(ref.parameters(), optimizer.clip_grad_norm)
        opt.step()
        losses.append(value.item())
    return np.array(losses), {k: v.detach().numpy() for k, v in ref.state_dict().items()}


def parity(trainer, losses, ref_losses, ref_state) -> dict:
    """Compare with torch at the trainer's training tolerance; the worst figures per kind."""
    from anychip.compiler.tolerances import compare

    tol = trainer.tolerance
    result = {"loss": compare(np.array(losses), ref_losses, tol)}
    state = trainer.state_dict()
    assert list(state) == list(ref_state)
    worst = None
    for key, expected in ref_state.items():
        cmp = compare(state[key], expected, tol)
        assert cmp.passed, f"{key}: max abs {cmp.max_abs:.3g}, max rel {cmp.max_rel:.3g} ({tol})"
        if worst is None or cmp.max_rel > worst.max_rel:
            worst = cmp
    result["params"] = worst
    assert result["loss"].passed, f"losses {losses} vs torch {ref_losses.tolist()} ({tol})"
    return result
