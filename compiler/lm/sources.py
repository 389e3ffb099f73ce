"""MODEL arguments of the LM commands -> a Hugging Face causal LM (torch, eval mode).

Accepted: a transformers causal-LM module; a local model folder (config.json with weights:
loaded with from_pretrained, nothing downloaded; without weights: built from the config with
seed 0); a config.json file (built from it, seed 0); zoo:llama / zoo:gpt2: the zoo's own seeded
weights moved into the Hugging Face class of the same architecture (the zoo's modules take the
full sequence and have no cache; HF's classes take position ids, a mask and a cache), so the
LM path and its reference are the same as for any transformers model.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import AnychipError

SEED = 0
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

# zoo:NAME for generation: the zoo's llama/gpt2 architectures in Hugging Face form (the zoo
# has no tokenizer, hence no special tokens: generation runs to max_new_tokens).
ZOO_CONFIGS = {
    "llama": {"model_type": "llama", "vocab_size": 8192, "hidden_size": 256,
              "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 128,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "bos_token_id": None, "eos_token_id": None, "pad_token_id": None},
    "gpt2": {"model_type": "gpt2", "vocab_size": 8192, "n_embd": 256, "n_layer": 4,
             "n_head": 4, "n_positions": 128, "activation_function": "gelu_new",
             "layer_norm_epsilon": 1e-5, "bos_token_id": None, "eos_token_id": None},
}


def _zoo_state_dict(name: str) -> dict:
    """The zoo module's weights under the Hugging Face class's parameter names."""
    import importlib

    module = importlib.import_module(f"anychip.models.{name}").build_module()
    src = module.state_dict()
    out = {}
    if name == "llama":
        out["model.embed_tokens.weight"] = src["tokens.weight"]
        out["model.norm.weight"] = src["norm.weight"]
        out["lm_head.weight"] = src["lm_head.weight"]
        for i in range(len(module.blocks)):
            a, b = f"blocks.{i}.", f"model.layers.{i}."
            out[b + "input_layernorm.weight"] = src[a + "input_norm.weight"]
            out[b + "post_attention_layernorm.weight"] = src[a + "post_attention_norm.weight"]
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[b + f"self_attn.{proj}.weight"] = src[a + f"attention.{proj}.weight"]
            for proj in ("gate_proj", "up_proj", "down_proj"):
                out[b + f"mlp.{proj}.weight"] = src[a + f"mlp.{proj}.weight"]
        return out
    out["transformer.wte.weight"] = src["tokens.weight"]
    out["transformer.wpe.weight"] = src["positions.weight"]
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = src["norm.weight"], \
        src["norm.bias"]
    out["lm_head.weight"] = src["tokens.weight"]
    for i in range(len(module.blocks)):
        a, b = f"blocks.{i}.", f"transformer.h.{i}."
        pairs = {"ln_1": "norm1", "ln_2": "norm2"}
        for hf, ours in pairs.items():
            out[b + f"{hf}.weight"], out[b + f"{hf}.bias"] = src[a + f"{ours}.weight"], \
                src[a + f"{ours}.bias"]
        # HF's GPT-2 Conv1D stores [in, out]: the transpose of nn.Linear's weight
        for hf, ours in {"attn.c_attn": "attention.qkv", "attn.c_proj": "attention.out",
                         "mlp.c_fc": "mlp.0", "mlp.c_proj": "mlp.2"}.items():
            out[b + f"{hf}.weight"] = src[a + f"{ours}.weight"].t().contiguous()
            out[b + f"{hf}.bias"] = src[a + f"{ours}.bias"]
    return out


def zoo_lm(name: str):
    model = from_config_dict(ZOO_CONFIGS[name], f"zoo:{name}")
    state = _zoo_state_dict(name)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(("inv_freq", "masked_bias", ".bias"))
               or k in state]
    if missing or unexpected:   # a zoo or transformers change: say which names moved
        raise AnychipError(f"zoo:{name}: weights do not map onto transformers' class "
                           f"(missing {missing[:2]}, unexpected {unexpected[:2]}).")
    return model.eval()


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise AnychipError("the LM commands need transformers: pip install transformers") from exc
    return transformers


def from_config_dict(config: dict, label: str):
    import torch

    tf = _transformers()
    config = dict(config)
    model_type = config.pop("model_type", None)
    if not model_type:
        raise AnychipError(f"{label}: config has no model_type; give a transformers config.json.")
    try:
        cfg = tf.AutoConfig.for_model(model_type, **config)
    except Exception as exc:
        raise AnychipError(f"{label}: transformers does not know model_type '{model_type}' "
                           f"({str(exc).splitlines()[0][:120]}).") from exc
    torch.manual_seed(SEED)
    try:
        model = tf.AutoModelForCausalLM.from_config(cfg)
    except ValueError as exc:
        raise AnychipError(f"{label}: '{model_type}' has no causal-LM head in transformers; give "
                           f"a decoder-only language model.") from exc
    return model.eval()


def load_causal_lm(model):
    """-> (torch module in eval mode, label)."""
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            return model.eval(), f"<{type(model).__name__}>"
    except ImportError:  # pragma: no cover
        pass
    text = str(model)
    if text.startswith("zoo:"):
        name = text[4:]
        if name not in ZOO_CONFIGS:
            raise AnychipError(f"{text}: no such LM in the zoo; LMs: "
                               f"{', '.join('zoo:' + n for n in ZOO_CONFIGS)}.")
        return zoo_lm(name), text
    path = Path(text)
    if not path.exists():
        raise AnychipError(f"{text}: no such file or folder; give a local model folder, a "
                           f"config.json or zoo:llama / zoo:gpt2.")
    folder = path if path.is_dir() else path.parent
    cfg_file = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(cfg_file.read_text())
    except FileNotFoundError as exc:
        raise AnychipError(f"{text}: no config.json in this folder; give a Hugging Face model "
                           f"folder.") from exc
    except (OSError, ValueError) as exc:
        raise AnychipError(f"{cfg_file}: not readable JSON ({exc}).") from exc
    if path.is_dir() and any((folder / w).exists() for w in WEIGHT_FILES):
        tf = _transformers()
        try:
            loaded = tf.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise AnychipError(f"{text}: from_pretrained failed: "
                               f"{str(exc).strip().splitlines()[0][:200]}") from exc
        return loaded.eval(), text
    return from_config_dict(config, text), text


def tokenizer_for(model_arg) -> object | None:
    """The model folder's own tokenizer, if transformers can load it without a download."""
    path = Path(str(model_arg))
    if not path.is_dir():
        return None
    try:
        tf = _transformers()
        return tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (AnychipError, OSError, ValueError, KeyError, TypeError):
        return None
