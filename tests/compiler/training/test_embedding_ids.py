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
