"""MODEL arguments of the LM commands -> a Hugging Face causal LM (torch, eval mode).

Accepted: a transformers causal-LM module; a local model folder (config.json with weights:
loaded with from_pretrained, nothing downloaded; without weights: built from the config with
seed 0); a config.json file (built from it, seed 0); zoo:llama / zoo:gpt2 (tiny configs of
those architectures, seeded: the zoo's own modules take the full sequence and have no cache).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import AnychipError

SEED = 0
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

# zoo:NAME for generation: the architectures of the zoo's llama/gpt2 in Hugging Face form.
ZOO_CONFIGS = {
    "llama": {"model_type": "llama", "vocab_size": 8192, "hidden_size": 256,
              "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False},
    "gpt2": {"model_type": "gpt2", "vocab_size": 8192, "n_embd": 256, "n_layer": 4,
             "n_head": 4, "n_positions": 1024},
}


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
        return from_config_dict(ZOO_CONFIGS[name], text), text
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
