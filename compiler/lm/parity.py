"""Token parity of a compiled LM: does the target produce the reference's tokens, and if not,
is the drift rounding or a bug?

Three runs of the same prompts:
1. the reference's greedy tokens: Hugging Face `generate` in torch eager with its own cache;
2. the target's greedy tokens: `CompiledLM.generate` (argmax compiled into the step);
3. per-step logits, teacher-forced with the reference tokens so that every step is comparable
   even after a divergence: the target's logits-returning prefill/decode functions, ONNX
   Runtime on the same fp32 graphs (the fp32 reference), and, at fp16/bf16, ONNX Runtime with
   every tensor stored in that format (format_error.py: the least error the format allows).

Each step's logits are judged by the tolerance table, then by the format-error rule (the one
verify and compare use). A reduced-precision target whose tokens diverge while every step's
logits stay within the format's own error drifted by rounding; a step beyond it is a bug.
fp32 targets must give the reference's tokens exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import NotExecutable
from ..format_error import emulated_outputs, has_emulation, judge
from ..reference import run_onnxruntime
from ..tolerances import compare, tolerance_for

TOP_K = 5
DEFAULT_PROMPTS = [[5, 6, 7, 8], [1, 2, 3, 4, 5, 6]]


@dataclass
class StepError:
    step: int
    max_abs: float
    rmse: float
    format_rmse: float | None
    rule: str               # "table" or "format" (the rule that decided), "-" when failed both
    passed: bool
    topk_overlap: float     # |top-k(target) ∩ top-k(fp32)| / k, mean over the batch
    argmax_agrees: bool


@dataclass
class LMParityReport:
    model: str
    target: str
    execution: str
    precision: str
    reference: str
    prompts: list
    reference_tokens: list
    tokens: list
    first_divergence: int | None        # first new-token position where any row differs
    steps: list[StepError] = field(default_factory=list)
    memory: dict | None = None          # weights, KV bytes/token, longest context on the target

    @property
    def tokens_equal(self) -> bool:
        return self.first_divergence is None

    @property
    def passed(self) -> bool:
        if self.precision in ("fp32", "fp64"):
            return self.tokens_equal
        return self.tokens_equal or all(s.passed for s in self.steps)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(tokens_equal=self.tokens_equal, passed=self.passed, top_k=TOP_K)
        return d

    def summary(self) -> str:
        n = len(self.reference_tokens[0]) if self.reference_tokens else 0
        head = (f"{self.model} on {self.target} ({self.execution}, {self.precision}): "
                f"{n} greedy tokens x {len(self.prompts)} prompts vs {self.reference}: ")
        if self.tokens_equal:
            head += "identical"
        else:
            head += f"first divergence at new token {self.first_divergence}"
        bad = [s for s in self.steps if not s.passed]
        if self.steps:
            worst = max(self.steps, key=lambda s: s.max_abs)
            head += (f"; decode logits vs fp32 (teacher-forced): max abs {worst.max_abs:.3g} "
                     f"at step {worst.step}, {len(self.steps) - len(bad)}/{len(self.steps)} "
                     f"steps within tolerance or the format's error, top-{TOP_K} overlap min "
                     f"{min(s.topk_overlap for s in self.steps):.2f}")
        if self.memory and self.memory.get("max_context_tokens") is not None:
            head += (f"; memory: weights {self.memory['weight_bytes'] / 2**20:.2f} MiB, KV "
                     f"cache {self.memory['kv_bytes_per_token']} B/token, longest context "
                     f"{self.memory['max_context_tokens']:,} tokens at batch "
                     f"{self.memory['batch']} ({self.memory['dtype']})")
        verdict = "PASS" if self.passed else "FAIL"
        if self.passed and not self.tokens_equal:
            verdict += " (tokens drift, every step within the format's own error: rounding)"
        elif not self.passed and bad:
            verdict += f" (step {bad[0].step} beyond the format's own error)"
        return f"{verdict}: {head}"

    def table(self) -> str:
        from ..text_table import table

        rows = [[s.step, f"{s.max_abs:.3g}", f"{s.rmse:.3g}",
                 "-" if s.format_rmse is None else f"{s.format_rmse:.3g}", s.rule,
                 "yes" if s.argmax_agrees else "no", f"{s.topk_overlap:.2f}",
                 "ok" if s.passed else "FAIL"] for s in self.steps]
        return table(["step", "max abs", "rmse", "fmt rmse", "rule", "argmax", f"top-{TOP_K}",
                      "verdict"], rows)


def reference_greedy(model, batch, max_new_tokens: int, pad: int) -> np.ndarray:
    """HF generate, greedy, no EOS: [B, max_new_tokens] new tokens."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.from_numpy(batch.ids), attention_mask=torch.from_numpy(
            batch.mask), max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad, eos_token_id=None)
    return out[:, batch.length:].numpy()


def teacher_forced_logits(run_prefill, run_decode, lm, batch, forced: np.ndarray,
                          pad: int) -> list[np.ndarray]:
    """Logits [B, V] of prefill then each decode step, fed the `forced` tokens."""
    from .compiled_lm import _pad_to

    b = batch.ids.shape[0]
    n = forced.shape[1]
    gear = lm.gear(batch.length, n)
    fill = pad if 0 <= pad < lm.vocab else 0   # masked positions: any valid id
    ids, mask = _pad_to(np.where(batch.mask == 1, batch.ids, fill), batch.mask, gear, fill)
    positions = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1).astype(np.int64)
    out = run_prefill({"input_ids": ids, "position_ids": positions, "attention_mask": mask})
    logits = [np.asarray(out["logits"], np.float32)]
    full_mask = np.zeros((b, lm.max_seq_len), np.int64)
    full_mask[:, :gear] = mask
    last = positions[:, -1:]
    for step in range(1, n):
        slot = gear + step - 1
        full_mask[:, slot] = 1
        last = last + 1
        out = run_decode({"input_ids": forced[:, step - 1:step].astype(np.int64),
                          "position_ids": last, "cache_index": np.array([slot], np.int64),
                          "attention_mask": full_mask, "k_cache": out["k_cache_out"],
                          "v_cache": out["v_cache_out"]})
        logits.append(np.asarray(out["logits"], np.float32))
    return logits


def _ort_runner(proto, emulate: str | None = None):
    names = [o.name for o in proto.graph.output]
    inputs = {i.name for i in proto.graph.input}

    def run(feed):
        feed = {k: v for k, v in feed.items() if k in inputs}
        if emulate:
            outs = emulated_outputs(proto, feed, emulate, "storage emulation")
            if outs is None:
                raise RuntimeError("no emulation")
        else:
            outs = run_onnxruntime(proto, feed, "reference")
        return dict(zip(names, outs))
    return run


def _art_runner(art):
    names = {s.name for s in art.inputs}
    return lambda feed: art.run({k: v for k, v in feed.items() if k in names})


def _topk_overlap(a: np.ndarray, e: np.ndarray, k: int = TOP_K) -> float:
    ta = np.argsort(-a, axis=-1, kind="stable")[:, :k]
    te = np.argsort(-e, axis=-1, kind="stable")[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, te)]))


def verify_lm(model, target: str = "cpu", max_new_tokens: int = 16, prompts=None,
              max_seq_len: int = 64, precision: str | None = None,
              logits: bool = True) -> LMParityReport:
    from .compiled_lm import compile_lm

    lm = compile_lm(model, target=target, max_seq_len=max_seq_len, precision=precision)
    label = lm.label
    prompts = prompts or DEFAULT_PROMPTS
    batch = lm.prepare(prompts, None, max_new_tokens)
    pad = 0 if lm.pad_token_id is None else int(lm.pad_token_id)
    b = batch.ids.shape[0]
    # one compiled pair returning token and logits: free-running tokens and per-step logits
    _, decode, execution = lm.compile_pair(b, batch.length, max_new_tokens, "both")
    if execution.mode.value not in ("executes", "simulates"):
        raise NotExecutable(f"target '{target}': prefill and decode compiled only "
                            f"({execution.why}); token parity needs a target that executes or "
                            f"simulates here.")
    ref = reference_greedy(lm.model, batch, max_new_tokens, pad)
    ours = lm.generate(prompts, max_new_tokens=max_new_tokens, eos_token_id=None,
                       pad_token_id=pad, output="both")[:, batch.length:]
    differs = np.flatnonzero((ours != ref).any(axis=0))
    report = LMParityReport(label, target, execution.mode.verb, decode.precision,
                            "Hugging Face generate (torch eager, its cache)", prompts,
                            ref.tolist(), ours.tolist(),
                            int(differs[0]) if differs.size else None)
    rows = lm.memory(b, [target])
    report.memory = rows[0] if rows else None
    if logits:
        report.steps = _step_errors(lm, batch, ref, pad, decode.precision)
    return report


def _step_errors(lm, batch, ref: np.ndarray, pad: int, precision: str) -> list[StepError]:
    b = batch.ids.shape[0]
    gear = lm.gear(batch.length, ref.shape[1])
    pre_art = lm.function("prefill", b, gear, "both")
    dec_art = lm.function("decode", b, 0, "both")
    pre_onnx, dec_onnx = lm.onnx_pair(b, gear, "both")
    actual = teacher_forced_logits(_art_runner(pre_art), _art_runner(dec_art), lm, batch, ref,
                                   pad)
    expected = teacher_forced_logits(_ort_runner(pre_onnx), _ort_runner(dec_onnx), lm, batch,
                                     ref, pad)
    emulated = None
    if has_emulation(precision):
        try:
            emulated = teacher_forced_logits(_ort_runner(pre_onnx, precision),
                                             _ort_runner(dec_onnx, precision), lm, batch, ref,
                                             pad)
        except RuntimeError:
            emulated = None
    tol = tolerance_for(precision, np.float32)
    steps = []
    for i, (a, e) in enumerate(zip(actual, expected)):
        cmp = compare(a, e, tol)
        fmt = judge(a, emulated[i], e, tol.atol) if emulated is not None else None
        rule = "table" if cmp.passed else ("format" if fmt is not None and fmt.passed else "-")
        rms = float(np.sqrt(np.mean((a.astype(np.float64) - e) ** 2)))
        steps.append(StepError(i, cmp.max_abs, rms, fmt.format_rmse if fmt else None, rule,
                               rule != "-", _topk_overlap(a, e),
                               bool((a.argmax(-1) == e.argmax(-1)).all())))
    return steps
