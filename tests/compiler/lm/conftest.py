"""Tiny seeded causal LMs of the architectures the LM path must handle (no downloads)."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

CONFIGS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2}),
    # grouped-query attention: 4 query heads share one key-value head
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 1}),
    "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel,
             {"vocab_size": 256, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128}),
    # learned positions, ReLU, and its own pad id (1): the caller's pad id pads the prompts
    "opt": (transformers.OPTConfig, transformers.OPTForCausalLM,
            {"vocab_size": 256, "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "word_embed_proj_dim": 64,
             "max_position_embeddings": 128}),
    # alternating sliding-window layers, logit soft-capping, pre- and post-norms
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
               {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "head_dim": 16, "sliding_window": 128}),
    # fused qkv and gate-up projections
    "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM,
             {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "pad_token_id": 0}),
}

# two prompts of different lengths: the shorter is left-padded, as HF pads a batch
PROMPTS = [[5, 6, 7, 8], [1, 2, 3, 4, 5, 6]]
MAX_SEQ_LEN = 64


def tiny_lm(arch: str, seed: int = 0, layers: int | None = None):
    config_cls, model_cls, kwargs = CONFIGS[arch]
    if layers is not None:   # compile-only checks: one layer has every kernel kind
        kwargs = {**kwargs, ("n_layer" if arch == "gpt2" else "num_hidden_layers"): layers}
    torch.manual_seed(seed)
    return model_cls(config_cls(**kwargs)).eval()


def hf_greedy(model, prompts, max_new_tokens, eos_token_id=None, pad=0):
    """Hugging Face generate (torch eager, its own cache) on the left-padded batch."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=eos_token_id)
    return out.numpy()


@pytest.fixture(scope="module")
def llama_cpu():
    """One tiny Llama compiled for cpu, shared by the tests of a module (compiles once)."""
    import anychip

    model = tiny_lm("llama")
    return model, anychip.compile_lm(model, target="cpu", max_seq_len=MAX_SEQ_LEN)
