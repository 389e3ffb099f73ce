"""MODEL arguments of the LM path: the zoo's weights in HF classes, refusals in one line."""

from __future__ import annotations

import pytest
import torch
from anychip.compiler.errors import AnychipError
from anychip.compiler.lm.sources import load_causal_lm


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_zoo_lm_is_the_zoo_model_in_a_hf_class(name):
    import importlib

    zoo = importlib.import_module(f"anychip.models.{name}")
    hf, label = load_causal_lm(f"zoo:{name}")
    x = zoo.example_inputs()[0]
    with torch.no_grad():
        expected = zoo.build_module()(x)
        actual = hf(input_ids=x).logits
    assert label == f"zoo:{name}"
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_sliding_window_shorter_than_the_cache_is_refused(tmp_path):
    import anychip

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, sliding_window=16))
    with pytest.raises(AnychipError, match="use max_seq_len <= 16"):
        anychip.compile_lm(model, max_seq_len=64)


def test_not_a_causal_lm_is_refused():
    import anychip

    with pytest.raises(AnychipError, match="not a Hugging Face causal LM"):
        anychip.compile_lm(torch.nn.Linear(2, 2))


def test_alibi_model_is_refused_in_one_line_saying_why():
    import anychip

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BloomForCausalLM(transformers.BloomConfig(
        vocab_size=64, hidden_size=32, n_layer=1, n_head=2))
    with pytest.raises(AnychipError, match="build_alibi_tensor.*ALiBi") as info:
        anychip.compile_lm(model, max_seq_len=32)
    assert "\n" not in str(info.value)
