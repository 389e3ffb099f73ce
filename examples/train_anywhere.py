"""Train one model on the host CPU and on the simulated Ascend 910B; compare the curves.

    python examples/train_anywhere.py [--model cnn|llama] [--targets cpu,ascend-910b] [--epochs 3]

The same torch module is compiled into a train step per target (ONNX -> Relax, loss appended,
gradient by TVM plus anychip's transformer gradients, the optimizer inside the step) and fed
the same synthetic batches; the script prints the loss curves side by side, torch's own curve
as the reference, and the largest difference. `cnn`: a small CNN with BatchNorm, SGD with
momentum. `llama`: a tiny transformers Llama causal LM (token-level loss, AdamW, a warm-up +
cosine schedule) learning to continue counting sequences. A target that cannot run here is
reported with the reason and left out.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from torch import nn

import anychip
from anychip.compiler.errors import AnychipError


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def synthetic_data(n: int = 128, classes: int = 4, seed: int = 0):
    """Images whose class is the brightest of four quadrants, plus noise: learnable, seeded."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32) * 0.5
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.0
    return x, y.astype(np.int64)


def batches(x, y, batch: int, epochs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            yield x[idx], y[idx]


class CausalLM(nn.Module):
    """A tiny transformers Llama returning its logits [batch, seq, vocab]."""

    def __init__(self, vocab: int = 16):
        super().__init__()
        import transformers

        config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, max_position_embeddings=32,
                                          attn_implementation="eager")
        self.lm = transformers.LlamaForCausalLM(config).float()

    def forward(self, ids):
        return self.lm(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits


def counting_data(n: int = 64, seq: int = 8, vocab: int = 16, seed: int = 0):
    """Sequences start, start+1, ... (mod vocab); labels are the next token, last one ignored."""
    rng = np.random.default_rng(seed)
    ids = (rng.integers(0, vocab, (n, 1)) + np.arange(seq)) % vocab
    labels = np.concatenate([ids[:, 1:], np.full((n, 1), -100)], axis=1)
    return ids.astype(np.int64), labels.astype(np.int64)


def torch_curve(model, optimizer, data, loss_name, schedule=None) -> list[float]:
    ref = copy.deepcopy(model).train()
    opt = optimizer.to_torch(ref.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule.factor) if schedule else None
    losses = []
    for xb, yb in data:
        opt.zero_grad()
        out = ref(torch.from_numpy(xb))
        if loss_name == "token_cross_entropy":
            out = out.reshape(-1, out.shape[-1])
        loss = nn.functional.cross_entropy(out, torch.from_numpy(yb).reshape(-1)
                                           if loss_name == "token_cross_entropy"
                                           else torch.from_numpy(yb), ignore_index=-100)
        loss.backward()
        if getattr(optimizer, "clip_grad_norm", None):
            torch.nn.utils.clip_grad_norm_(ref.parameters(), optimizer.clip_grad_norm)
        opt.step()
        if sched:
            sched.step()
        losses.append(loss.item())
    return losses


def setup(name: str, batch: int, epochs: int):
    """(model, batches, loss, optimizer, schedule) for --model."""
    torch.manual_seed(0)
    if name == "llama":
        model = CausalLM()
        data = list(batches(*counting_data(), batch, epochs))
        schedule = anychip.optim.schedules.cosine(len(data), warmup_steps=2)
        return (model, data, "token_cross_entropy",
                anychip.optim.AdamW(lr=1e-2, clip_grad_norm=1.0), schedule)
    model = SmallCNN()
    data = list(batches(*synthetic_data(), batch, epochs))
    return model, data, "cross_entropy", anychip.optim.SGD(lr=0.05, momentum=0.9), None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cnn", "llama"], default="cnn")
    parser.add_argument("--targets", default="cpu,ascend-910b")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    model, data, loss, optimizer, schedule = setup(args.model, args.batch_size, args.epochs)
    curves = {"torch": torch_curve(model, optimizer, data, loss, schedule)}
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        try:
            example = (torch.from_numpy(data[0][0]),)
            trainer = anychip.compile_training(model, example_inputs=example, loss=loss,
                                               optimizer=optimizer, schedule=schedule,
                                               target=target)
            print(f"{trainer.describe()}; compiled in {trainer.report['compile_s']:.1f} s")
            curves[target] = [trainer.step(xb, yb) for xb, yb in data]
        except AnychipError as exc:  # NotExecutable included: say why and go on
            print(f"{target}: skipped: {exc}")

    names = list(curves)
    print("\nstep  " + "  ".join(f"{n:>12}" for n in names))
    for step in range(len(data)):
        print(f"{step + 1:4d}  " + "  ".join(f"{curves[n][step]:12.6f}" for n in names))
    compiled = [n for n in names if n != "torch"]
    for name in compiled:
        diff = np.max(np.abs(np.array(curves[name]) - np.array(curves["torch"])))
        print(f"largest |{name} - torch| over the curve: {diff:.3g}")
    if len(compiled) >= 2:
        a, b = compiled[:2]
        diff = np.max(np.abs(np.array(curves[a]) - np.array(curves[b])))
        print(f"largest |{a} - {b}| over the curve: {diff:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
