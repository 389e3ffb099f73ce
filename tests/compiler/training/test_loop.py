"""The training loop against torch: AdamW with global-norm clipping, a warm-up + cosine
schedule and gradient accumulation; SGD with a step schedule; frozen parameters; checkpoints
that continue bit for bit (also mid-accumulation); fit() with an eval loss and a loss log."""

from __future__ import annotations

import copy
import csv

import anychip
import numpy as np
import pytest
import torch
from anychip.compiler.errors import AnychipError
from torch import nn

from .torch_models import MLP, batches

SHAPE, CLASSES = (8, 16), 5


def _torch_run(model, optimizer, schedule, data, accumulate=1, clip=None):
    """torch's loop: loss / accumulate, backward per batch, clip, step, scheduler per update."""
    ref = copy.deepcopy(model).train()
    opt = optimizer.to_torch([p for p in ref.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule.factor) if schedule else None
    losses = []
    for i, (x, y) in enumerate(data):
        loss = nn.functional.cross_entropy(ref(x), y)
        losses.append(loss.item())
        (loss / accumulate).backward()
        if (i + 1) % accumulate == 0:
            if clip is not None:
                torch.nn.utils.clip_grad_norm_([p for p in ref.parameters() if p.requires_grad],
                                               clip)
            opt.step()
            opt.zero_grad()
            if sched:
                sched.step()
    return np.array(losses), {k: v.detach().numpy() for k, v in ref.state_dict().items()}


def _check(trainer, losses, ref_losses, ref_state, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(losses, ref_losses, rtol=rtol, atol=atol)
    state = trainer.state_dict()
    for key, want in ref_state.items():
        np.testing.assert_allclose(state[key], want, rtol=rtol, atol=atol, err_msg=key)


@pytest.fixture(scope="module")
def adamw_setup():
    torch.manual_seed(0)
    model = MLP()
    optimizer = anychip.optim.AdamW(lr=0.02, weight_decay=0.05, clip_grad_norm=0.5)
    schedule = anychip.optim.schedules.cosine(total_steps=6, warmup_steps=2, min_factor=0.1)
    trainer = anychip.compile_training(model, example_inputs=(torch.zeros(SHAPE),),
                                       optimizer=optimizer, schedule=schedule, accumulate=2)
    return model, optimizer, schedule, trainer


def test_adamw_clipping_cosine_warmup_accumulation_match_torch(adamw_setup, tmp_path):
    model, optimizer, schedule, trainer = adamw_setup
    data = batches(SHAPE, CLASSES, 12)
    ref_losses, ref_state = _torch_run(model, optimizer, schedule, data, accumulate=2, clip=0.5)
    fresh = anychip.load_training(trainer.save(tmp_path / "t.train"))
    losses = [fresh.step(x, y) for x, y in data]
    assert fresh.steps == 6 and fresh.micro == 0
    _check(fresh, np.array(losses), ref_losses, ref_state)
    # the clipping really acted: without it torch ends elsewhere
    _, unclipped = _torch_run(model, optimizer, schedule, data, accumulate=2)
    key = "fc1.weight"
    assert np.max(np.abs(unclipped[key] - ref_state[key])) > 1e-4


def test_checkpoint_mid_accumulation_continues_bit_for_bit(adamw_setup, tmp_path):
    _, _, _, trainer = adamw_setup
    data = batches(SHAPE, CLASSES, 9, seed=5)
    run = anychip.load_training(trainer.save(tmp_path / "a.train"))
    for x, y in data[:5]:                      # 2 updates and one batch into the third
        run.step(x, y)
    assert run.micro == 1
    path = run.save_checkpoint(tmp_path / "mid.safetensors")
    straight = [run.step(x, y) for x, y in data[5:]]
    resumed = anychip.load_training(trainer.save(tmp_path / "b.train"))
    resumed.load_checkpoint(path)
    assert (resumed.steps, resumed.micro) == (2, 1)
    again = [resumed.step(x, y) for x, y in data[5:]]
    assert again == straight
    for key, value in resumed.state_dict().items():
        np.testing.assert_array_equal(value, run.state_dict()[key], err_msg=key)
    # a checkpoint of another setup is refused, naming what differs
    other = anychip.compile_training(MLP(), example_inputs=(torch.zeros(SHAPE),),
                                     optimizer=anychip.optim.SGD(lr=0.1, momentum=0.9))
    with pytest.raises(AnychipError, match="different training setup .*optimizer"):
        other.load_checkpoint(path)
    # SGD with a step schedule (own rule, lr slot) and frozen layers, against torch
    torch.manual_seed(1)
    frozen = MLP()
    for p in frozen.fc1.parameters():
        p.requires_grad_(False)
    sgd = anychip.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3)
    schedule = anychip.optim.schedules.step(step_size=2, gamma=0.5)
    data = batches(SHAPE, CLASSES, 5, seed=7)
    ref_losses, ref_state = _torch_run(frozen, sgd, schedule, data)
    head = anychip.compile_training(frozen, example_inputs=(torch.zeros(SHAPE),),
                                    optimizer=sgd, schedule=schedule)
    losses = [head.step(x, y) for x, y in data]
    _check(head, np.array(losses), ref_losses, ref_state)
    np.testing.assert_array_equal(head.state_dict()["fc1.weight"],
                                  frozen.fc1.weight.detach().numpy())
    assert "fc1.weight" not in head.plan["params"]


def test_fit_logs_every_batch_and_the_eval_loss(adamw_setup, tmp_path):
    _, _, _, trainer = adamw_setup
    run = anychip.load_training(trainer.save(tmp_path / "f.train"))
    data = batches(SHAPE, CLASSES, 4, seed=9)
    val = batches(SHAPE, CLASSES, 2, seed=10)
    log = tmp_path / "loss.csv"
    rows = run.fit(data, epochs=2, eval_batches=val, log=log, progress=False)
    assert [r["kind"] for r in rows].count("train") == 8
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(evals) == 2 and run.steps == 4
    expected = np.mean([run.evaluate(x, y) for x, y in val])
    assert evals[-1]["loss"] == pytest.approx(expected, rel=1e-6)
    with open(log) as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == len(rows)
    assert float(written[0]["loss"]) == pytest.approx(rows[0]["loss"])
    assert float(written[0]["lr"]) == 0.0            # the first warm-up update runs at lr 0
    with pytest.raises(AnychipError, match="one-shot iterator"):
        run.fit(iter(data), epochs=2)
