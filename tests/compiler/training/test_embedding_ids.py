"""A train step's embedding lookup gets the inference path's safe Gather: an out-of-range token
id never reads out of bounds (docs/security.md case 12). Before the train step went through the
target-neutral passes, its `take` kept TVM's mode "fast" and read arbitrary memory."""

from __future__ import annotations

import anychip
import numpy as np
import pytest
import torch
from torch import nn

from .torch_models import torch_reference

VOCAB = 20


class BagOfEmbeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        return self.head(self.emb(ids).mean(1))


@pytest.mark.slow
def test_embedding_trains_like_torch_and_an_out_of_range_id_gives_nan():
    torch.manual_seed(0)
    model = BagOfEmbeddings()
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randint(0, VOCAB, (4, 6), generator=gen),
             torch.randint(0, 3, (4,), generator=gen)) for _ in range(5)]
    optimizer = anychip.optim.SGD(lr=0.5)
    ref_losses, _ = torch_reference(model, optimizer, data)
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       loss="cross_entropy", optimizer=optimizer)
    losses = np.array([trainer.step(x.numpy(), y.numpy()) for x, y in data])
    np.testing.assert_allclose(losses, ref_losses, atol=1e-5)
    bad = data[0][0].numpy().copy()
    bad[0, 0] = VOCAB + 10**6          # far past the table: "fast" mode would read garbage
    assert np.isnan(trainer.step(bad, data[0][1].numpy()))


class PaddedTiedLM(nn.Module):
    """An embedding with padding_idx whose table is also the output projection (tied, as in
    Gemma): the pad row still learns through the projection, but not through its lookups."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8, padding_idx=0)
        self.mix = nn.Linear(8, 8)

    def forward(self, ids):
        return self.mix(self.emb(ids)).tanh() @ self.emb.weight.t()


@pytest.mark.slow
def test_lookups_of_the_padding_index_add_no_gradient_as_in_torch():
    """torch's embedding backward skips padding_idx; the train step added those rows' gradient
    (Gemma, Phi-3 and OPT losses 1e-2 from torch after 8 AdamW steps)."""
    torch.manual_seed(0)
    model = PaddedTiedLM()
    gen = torch.Generator().manual_seed(2)
    data = []
    for _ in range(8):
        ids = torch.randint(0, VOCAB, (4, 6), generator=gen)
        ids[:, :2] = 0                          # left padding: the pad id in every row
        data.append((ids, torch.randint(0, VOCAB, (4, 6), generator=gen)))
    optimizer = anychip.optim.AdamW(lr=0.05, weight_decay=1e-2)
    ref_losses, ref_state = torch_reference(model, optimizer, data, loss="token_cross_entropy")
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       loss="token_cross_entropy", optimizer=optimizer)
    losses = np.array([trainer.step(x.numpy(), y.numpy()) for x, y in data])
    np.testing.assert_allclose(losses, ref_losses, atol=1e-5)
    np.testing.assert_allclose(trainer.state_dict()["emb.weight"], ref_state["emb.weight"],
                               atol=1e-5)
