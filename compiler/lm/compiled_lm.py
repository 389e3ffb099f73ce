"""CompiledLM: prefill + decode compiled for one target, and the generation loop around them.

Shapes are static (static_cache.py says why), so one compiled pair serves one batch size and
one prefill length ("gear"). A prompt is left-padded up to the smallest gear that holds it
(powers of two from 8, or the lengths the caller gives): a few prefill functions cover every
prompt, the decode function is shared by all of them. Functions are exported and compiled on
first use and kept (anychip's compile cache keeps them across processes too).

The loop follows Hugging Face `generate`: left padding with an attention mask, position ids
from the mask's cumulative sum, finished rows filled with the pad token after their EOS, and
the loop stops when every row has finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import AnychipError, NotExecutable
from . import export as lm_export
from .prompts import Batch, check_budget, left_pad
from .sampling import Sampler


@dataclass
class GenerationResult:
    """Token ids (prompt as padded + new tokens) and how they were obtained."""

    sequences: np.ndarray
    prompt_length: int                 # columns of `sequences` that are the (padded) prompt
    new_tokens: int
    execution: str                     # executed / simulated
    target: str
    stopped_by_eos: bool = False
    timings: dict = field(default_factory=dict)


class CompiledLM:
    """A causal LM compiled as a prefill and a decode function for one target."""

    def __init__(self, model, target: str = "cpu", max_seq_len: int = 256,
                 prefill_lengths: tuple[int, ...] | None = None, precision: str | None = None,
                 label: str | None = None, **options: Any):
        import torch

        self.label = label or f"<{type(model).__name__}>"
        if int(max_seq_len) < 2:
            raise AnychipError(f"{self.label}: max_seq_len must be at least 2, got {max_seq_len}.")
        lm_export.check_supported(model, self.label, int(max_seq_len))
        self.model = model.eval()
        self.target = target
        self.max_seq_len = int(max_seq_len)
        self.precision = precision
        self.options = options
        self.prefill_lengths = tuple(sorted({int(n) for n in prefill_lengths or ()}))
        if any(n < 1 or n >= self.max_seq_len for n in self.prefill_lengths):
            raise AnychipError(f"{self.label}: prefill lengths must lie in 1..{self.max_seq_len - 1}"
                               f", got {self.prefill_lengths}.")
        with torch.no_grad():
            self.shape = lm_export.probe(self.model, self.max_seq_len)
        config = self.model.config
        self.vocab = self.shape.vocab
        gen = getattr(self.model, "generation_config", None)
        self.eos_token_id = getattr(gen, "eos_token_id", None) or getattr(config, "eos_token_id",
                                                                          None)
        self.pad_token_id = getattr(gen, "pad_token_id", None)
        if self.pad_token_id is None:
            self.pad_token_id = getattr(config, "pad_token_id", None)
        self._functions: dict[tuple, Any] = {}

    # -- compiled functions -----------------------------------------------------------------
    def gear(self, prompt_len: int, new_tokens: int) -> int:
        """The prefill length a prompt is padded to: leaves room for the new tokens."""
        room = self.max_seq_len - new_tokens
        fitting = [g for g in self.prefill_lengths if prompt_len <= g <= room]
        if fitting:
            return fitting[0]
        if self.prefill_lengths:
            return prompt_len
        g = 8
        while g < prompt_len:
            g *= 2
        return max(prompt_len, min(g, room))

    def function(self, kind: str, batch: int, length: int = 0, output: str = "token"):
        """The compiled prefill (`length` tokens) or decode function for `batch` rows."""
        key = (kind, batch, length if kind == "prefill" else 0, output)
        art = self._functions.get(key)
        if art is None:
            from ..driver import compile_model

            if kind == "prefill":
                proto = lm_export.export_prefill(self.model, self.shape, batch, length,
                                                 self.max_seq_len, output)
            else:
                proto = lm_export.export_decode(self.model, self.shape, batch,
                                                self.max_seq_len, output)
            art = compile_model(proto, target=self.target, precision=self.precision,
                                hot=kind == "decode", **self.options)   # once per token
            self._functions[key] = art
        return art

    def onnx_pair(self, batch: int, length: int, output: str = "logits"):
        """The ONNX prefill and decode graphs (for ONNX Runtime references and `compare`)."""
        return (lm_export.export_prefill(self.model, self.shape, batch, length,
                                         self.max_seq_len, output),
                lm_export.export_decode(self.model, self.shape, batch, self.max_seq_len, output))

    def compile_pair(self, batch: int, prompt_len: int, new_tokens: int,
                     output: str = "token"):
        """Compile (or fetch) the prefill for this prompt's gear and the decode function.

        Returns (prefill, decode, execution) where execution is the decode artifact's
        Execution: executes / simulates / compiles-only on this machine, with the reason."""
        gear = self.gear(prompt_len, new_tokens)
        prefill = self.function("prefill", batch, gear, output)
        decode = self.function("decode", batch, 0, output)
        return prefill, decode, decode.execution()

    def memory(self, batch: int = 1, targets=None) -> list[dict]:
        """Weights, KV-cache bytes per token and the longest context per profile (memory.py)."""
        from .memory import memory_table

        return memory_table(self.model, self.shape, batch, targets)

    # -- generation -------------------------------------------------------------------------
    def prepare(self, input_ids, attention_mask=None, max_new_tokens: int = 16,
                pad_token_id=None) -> Batch:
        """Validate and left-pad the prompts (with `pad_token_id`, else the model's pad id);
        raises AnychipError (exit 2) on bad input."""
        pad = self.pad_token_id if pad_token_id is None else pad_token_id
        batch = left_pad(input_ids, attention_mask, pad, self.vocab, self.label)
        check_budget(batch.length, max_new_tokens, self.max_seq_len, self.label)
        return batch

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 16,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, eos_token_id=None, pad_token_id=None,
                 return_result: bool = False, output: str | None = None):
        """Greedy (argmax compiled in) or seeded sampling; numpy [batch, prompt + new] ids."""
        eos = self.eos_token_id if eos_token_id is None else eos_token_id
        eos_set = set(np.atleast_1d(eos).tolist()) if eos is not None else set()
        pad = pad_token_id if pad_token_id is not None else (
            self.pad_token_id if self.pad_token_id is not None else
            (min(eos_set) if eos_set else 0))
        # the prompts' left padding and the finished rows' padding are the same id, as in
        # Hugging Face's output (OPT's and OLMo's own pad id is 1: a caller's 0 was used
        # only after the prompt)
        batch = self.prepare(input_ids, attention_mask, max_new_tokens, pad)
        sampler = Sampler(temperature, top_k, top_p, seed) if do_sample else None
        output = output or ("logits" if sampler else "token")   # "both": parity runs
        result = self._loop(batch, max_new_tokens, sampler, output, eos_set, pad)
        return result if return_result else result.sequences

    def _loop(self, batch: Batch, max_new_tokens: int, sampler, output: str, eos_set: set,
              pad: int) -> GenerationResult:
        b = batch.ids.shape[0]
        gear = self.gear(batch.length, max_new_tokens)
        prefill, decode, execution = self.compile_pair(b, batch.length, max_new_tokens, output)
        mode = execution.mode
        if mode.value not in ("executes", "simulates"):
            raise NotExecutable(f"target '{self.target}': prefill and decode were compiled "
                                f"only ({execution.why}); nothing was generated.")
        # what the graphs are fed at masked or finished positions must be a valid id (a gather
        # out of range is undefined on a device); the pad id only appears in the output
        fill = pad if 0 <= pad < self.vocab else 0
        ids, mask = _pad_to(np.where(batch.mask == 1, batch.ids, fill), batch.mask, gear, fill)
        positions = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1).astype(np.int64)
        feed = {"input_ids": ids, "position_ids": positions, "attention_mask": mask}
        t0 = time.perf_counter()
        out = prefill.run(_only(prefill, feed))
        t1 = time.perf_counter()
        k, v = out["k_cache_out"], out["v_cache_out"]
        full_mask = np.zeros((b, self.max_seq_len), np.int64)
        full_mask[:, :gear] = mask
        last_pos = positions[:, -1:]
        unfinished = np.ones(b, bool)
        new = []
        slot = gear
        for step in range(max_new_tokens):
            token = _pick(out, sampler)
            token = np.where(unfinished[:, None], token, pad)
            new.append(token)
            if eos_set:
                unfinished &= ~np.isin(token[:, 0], list(eos_set))
            if not unfinished.any() or step == max_new_tokens - 1:
                break
            full_mask[:, slot] = 1
            last_pos = last_pos + 1
            fed = np.where(unfinished[:, None], token, fill).astype(np.int64)
            feed = {"input_ids": fed, "position_ids": last_pos,
                    "cache_index": np.array([slot], np.int64), "attention_mask": full_mask,
                    "k_cache": k, "v_cache": v}
            out = decode.run(_only(decode, feed))
            k, v = out["k_cache_out"], out["v_cache_out"]
            slot += 1
        t2 = time.perf_counter()
        tokens = np.concatenate(new, axis=1)
        seqs = np.concatenate([batch.ids, tokens], axis=1)
        return GenerationResult(seqs, batch.length, tokens.shape[1], mode.verb, self.target,
                                stopped_by_eos=bool(eos_set) and not unfinished.any(),
                                timings={"prefill_s": t1 - t0, "decode_s": t2 - t1,
                                         "decode_steps": len(new) - 1})


def _only(art, feed: dict) -> dict:
    """Feed only the inputs the graph declares (an exporter may drop unused ones)."""
    names = {s.name for s in art.inputs}
    return {k: v for k, v in feed.items() if k in names}


def _pick(out: dict, sampler) -> np.ndarray:
    if sampler is None and "next_token" in out:
        return np.asarray(out["next_token"], np.int64).reshape(-1, 1)
    logits = np.asarray(out["logits"], np.float32)
    if sampler is None:
        return logits.argmax(-1).astype(np.int64).reshape(-1, 1)
    return sampler(logits).reshape(-1, 1)


def _pad_to(ids: np.ndarray, mask: np.ndarray, length: int, pad: int):
    extra = length - ids.shape[1]
    if extra <= 0:
        return ids.astype(np.int64), mask.astype(np.int64)
    ids = np.concatenate([np.full((ids.shape[0], extra), pad, np.int64), ids], axis=1)
    mask = np.concatenate([np.zeros((mask.shape[0], extra), np.int64), mask], axis=1)
    return ids.astype(np.int64), mask.astype(np.int64)


def compile_lm(model, target: str = "cpu", max_seq_len: int = 256, **kwargs) -> CompiledLM:
    """Python entry point: a transformers causal LM, a local model folder / config.json, or
    zoo:NAME -> CompiledLM (functions are compiled on first use)."""
    from .sources import load_causal_lm

    module, label = load_causal_lm(model)
    return CompiledLM(module, target=target, max_seq_len=max_seq_len,
                      label=kwargs.pop("label", label), **kwargs)

