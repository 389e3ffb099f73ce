"""Generate with one tiny Llama on every family and print the tokens and their parity.

    python examples/generate_anywhere.py [--targets cpu,ascend-910b,nvidia-h100,biren-br104]
                                         [--new-tokens 8] [--arch llama|qwen2|gpt2]

The model is a seeded transformers model built from a tiny config (no download). For each
target anychip compiles a prefill and a decode function sharing a static KV cache. Where the
target executes (cpu) or simulates (ascend-*), it generates greedily and compares the tokens
with Hugging Face's generate (torch eager), with the per-step logit error against fp32. Where
it only compiles here (cuda without a GPU, the gpu family), both functions are compiled and
the script says that nothing ran.
"""

from __future__ import annotations

import argparse

import anychip
import torch
import transformers
from anychip.compiler.errors import AnychipError, NotExecutable
from anychip.compiler.lm.parity import verify_lm

CONFIGS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              {"num_key_value_heads": 2}),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              {"num_key_value_heads": 1}),
    "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel, {}),
}
PROMPTS = [[5, 6, 7, 8], [1, 2, 3, 4, 5, 6]]


def tiny_model(arch: str):
    config_cls, model_cls, extra = CONFIGS[arch]
    if arch == "gpt2":
        config = config_cls(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    else:
        config = config_cls(vocab_size=256, hidden_size=64, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=4, **extra)
    torch.manual_seed(0)
    return model_cls(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="cpu,ascend-910b,nvidia-h100,biren-br104")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--arch", choices=sorted(CONFIGS), default="llama")
    args = parser.parse_args()
    model = tiny_model(args.arch)
    for target in args.targets.split(","):
        print(f"== {target}")
        try:
            report = verify_lm(model, target=target, max_new_tokens=args.new_tokens,
                               prompts=PROMPTS, max_seq_len=64)
        except NotExecutable as exc:
            lm = anychip.compile_lm(model, target=target, max_seq_len=64)
            try:
                lm.compile_pair(len(PROMPTS), max(map(len, PROMPTS)), args.new_tokens)
                print(f"  prefill and decode compiled only: {exc}")
            except AnychipError as why:
                print(f"  not compiled here: {why}")
            continue
        except AnychipError as exc:
            print(f"  failed: {exc}")
            continue
        for i, row in enumerate(report.tokens):
            print(f"  [{i}] {' '.join(map(str, row))}")
        print(f"  {report.summary()}")


if __name__ == "__main__":
    main()
