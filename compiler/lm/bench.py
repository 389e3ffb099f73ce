"""Generation speed: prefill tokens/s and decode ms/token, anychip against torch eager with
Hugging Face's own cache (DynamicCache, the path `model.generate` takes), interleaved.

Each round runs both engines once, in alternating order, on the same prompt (batch 1, random
token ids, seeded), so a noisy neighbour slows both alike; medians over the rounds are
reported with the load average before and after. Greedy decoding on both sides; the anychip
decode step moves its token and the KV cache through numpy each step (Artifact.run), which the
numbers include.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import NotExecutable


def _torch_generation(model, ids: np.ndarray, new_tokens: int) -> tuple[float, float]:
    import inspect

    import torch
    from transformers import DynamicCache

    from .steps import _cache_kwarg

    kw = _cache_kwarg(model)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(
        model.forward).parameters else {}
    with torch.no_grad():
        x = torch.from_numpy(ids)
        cache = DynamicCache(config=model.config)
        t0 = time.perf_counter()
        out = model(input_ids=x, use_cache=True, **{kw: cache}, **keep)
        token = out.logits[:, -1:].argmax(-1)
        t1 = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, use_cache=True, **{kw: cache}, **keep)
            token = out.logits[:, -1:].argmax(-1)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def _anychip_generation(lm, ids: np.ndarray, new_tokens: int) -> tuple[float, float]:
    result = lm.generate(ids, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0,
                         return_result=True)
    return result.timings["prefill_s"], result.timings["decode_s"]


def bench_generation(lm, prompt_len: int = 32, new_tokens: int = 32, rounds: int = 5,
                     warmup: int = 1, seed: int = 0) -> dict:
    """Interleaved timing of anychip and torch eager; a dict for --json and the printout."""
    ids = np.random.default_rng(seed).integers(0, lm.vocab, (1, prompt_len)).astype(np.int64)
    _, _, execution = lm.compile_pair(1, prompt_len, new_tokens)
    if execution.mode.value not in ("executes", "simulates"):
        raise NotExecutable(f"target '{lm.target}': compiled only ({execution.why}); nothing "
                            f"to time here.")
    engines = {"anychip": lambda: _anychip_generation(lm, ids, new_tokens),
               "torch": lambda: _torch_generation(lm.model, ids, new_tokens)}
    for _ in range(warmup):
        for run in engines.values():
            run()
    load_before = os.getloadavg()[0]
    times = {name: [] for name in engines}
    order = list(engines)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            times[name].append(engines[name]())
    load_after = os.getloadavg()[0]
    result = {"target": lm.target, "execution": execution.mode.verb, "prompt_len": prompt_len,
              "gear": lm.gear(prompt_len, new_tokens), "new_tokens": new_tokens,
              "rounds": rounds, "load_average": [round(load_before, 2), round(load_after, 2)],
              "cpu_count": os.cpu_count(), "engines": {}}
    for name, samples in times.items():
        prefill = float(np.median([p for p, _ in samples]))
        decode = float(np.median([d for _, d in samples]))
        result["engines"][name] = {
            "prefill_ms": prefill * 1e3, "prefill_tokens_per_s": prompt_len / prefill,
            "decode_ms_per_token": decode * 1e3 / max(new_tokens - 1, 1)}
    a, t = result["engines"]["anychip"], result["engines"]["torch"]
    result["ratio_decode"] = a["decode_ms_per_token"] / t["decode_ms_per_token"]
    result["ratio_prefill"] = a["prefill_ms"] / t["prefill_ms"]
    return result


def format_bench(r: dict) -> str:
    head = (f"generation on {r['target']} ({r['execution']}): prompt {r['prompt_len']} tokens "
            f"(prefill gear {r['gear']}), {r['new_tokens']} new, batch 1, median of "
            f"{r['rounds']} interleaved rounds; load average {r['load_average'][0]} -> "
            f"{r['load_average'][1]} on {r['cpu_count']} CPUs")
    lines = [head]
    for name, e in r["engines"].items():
        label = "anychip" if name == "anychip" else "torch eager + HF DynamicCache"
        lines.append(f"  {label:31s} prefill {e['prefill_ms']:8.2f} ms "
                     f"({e['prefill_tokens_per_s']:9.1f} tokens/s)   decode "
                     f"{e['decode_ms_per_token']:7.2f} ms/token")
    lines.append(f"  anychip / torch: prefill {r['ratio_prefill']:.2f}x, decode "
                 f"{r['ratio_decode']:.2f}x")
    return "\n".join(lines)
