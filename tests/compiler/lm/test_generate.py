"""Generation on cpu: greedy tokens identical to Hugging Face's generate, sampling, EOS."""

from __future__ import annotations

import numpy as np
import pytest
from anychip.compiler.errors import AnychipError

from .conftest import MAX_SEQ_LEN, PROMPTS, hf_greedy, tiny_lm


@pytest.mark.slow   # compiles prefill + decode (tens of seconds on 2 cores)
def test_llama_greedy_matches_hf(llama_cpu):
    model, lm = llama_cpu
    ours = lm.generate(PROMPTS, max_new_tokens=16, eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(ours, hf_greedy(model, PROMPTS, 16))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2", "gpt2", "opt", "gemma2", "phi3"])
def test_greedy_matches_hf(arch):
    import anychip

    model = tiny_lm(arch)
    lm = anychip.compile_lm(model, target="cpu", max_seq_len=MAX_SEQ_LEN)
    ours = lm.generate(PROMPTS, max_new_tokens=16, eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(ours, hf_greedy(model, PROMPTS, 16))


@pytest.mark.slow   # compiles prefill + decode (tens of seconds on 2 cores)
def test_eos_stops_a_row_and_pads_it_as_hf(llama_cpu):
    model, lm = llama_cpu
    free = hf_greedy(model, PROMPTS, 16)
    eos = int(free[0, 6 + 2])          # the third token row 0 generates
    expected = hf_greedy(model, PROMPTS, 16, eos_token_id=eos)
    ours = lm.generate(PROMPTS, max_new_tokens=16, eos_token_id=eos, pad_token_id=0)
    np.testing.assert_array_equal(ours, expected)
    assert (ours[0, 6 + 3:] == 0).all()


@pytest.mark.slow   # compiles prefill + decode (tens of seconds on 2 cores)
def test_seeded_sampling_is_reproducible(llama_cpu):
    _, lm = llama_cpu
    kw = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "top_k": 50, "top_p": 0.95,
              "eos_token_id": None}
    a = lm.generate(PROMPTS, seed=7, **kw)
    b = lm.generate(PROMPTS, seed=7, **kw)
    c = lm.generate(PROMPTS, seed=8, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (2, 6 + 8) and ((a >= 0) & (a < 256)).all()


@pytest.mark.slow   # compiles prefill + decode (tens of seconds on 2 cores)
def test_top_k_one_is_greedy(llama_cpu):
    _, lm = llama_cpu
    sampled = lm.generate(PROMPTS, max_new_tokens=6, do_sample=True, top_k=1, seed=3,
                          eos_token_id=None, pad_token_id=0)
    greedy = lm.generate(PROMPTS, max_new_tokens=6, eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(sampled, greedy)


@pytest.mark.parametrize("prompts, new, match", [
    ([list(range(1, 64))], 4, "exceed max_seq_len"),
    ([list(range(1, 70))], 1, "max_seq_len is 64"),
    ([[1, 2, 3]], 62, "ask for at most 61"),
    ([[]], 4, "empty"),
    ([[1, 2], []], 4, "prompt 1 of the batch is empty"),
    ([[1, 2, 256]], 4, "token id 256 is outside the vocabulary"),
    ([[1, -1]], 4, "token id -1"),
    ([[1, 2]], 0, "max_new_tokens must be at least 1"),
])
def test_bad_input_is_one_line_before_anything_runs(prompts, new, match):
    import anychip

    lm = anychip.compile_lm(tiny_lm("llama"), target="cpu", max_seq_len=MAX_SEQ_LEN)
    with pytest.raises(AnychipError, match=match) as info:
        lm.generate(prompts, max_new_tokens=new)
    assert "\n" not in str(info.value)
    assert not lm._functions            # nothing was compiled, let alone generated
