"""`anychip generate MODEL --target T --prompt-ids 1,2,3 | --prompt TEXT --max-new-tokens N`.

Compiles the model's prefill and decode functions for the target and generates. On a target
that only compiles here (cuda without a GPU, the gpu family) both functions are compiled, the
command says so and exits 3: no token is reported that was not generated.
"""

from __future__ import annotations

import json

from ..errors import AnychipError, NotExecutable


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate tokens with a causal LM (prefill + decode "
                                        "with a KV cache) on a target")
    add_lm_args(p)
    p.add_argument("--prompt-ids", action="append", metavar="1,2,3",
                   help="prompt token ids, comma-separated (repeat for a batch)")
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="prompt text, tokenized by the model folder's own tokenizer (repeat "
                        "for a batch)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eos-token-id", type=int, help="stop a row at this token (default: the "
                                                    "model's generation config)")
    p.add_argument("--memory", action="store_true",
                   help="print weights, KV-cache bytes per token and the longest context that "
                        "fits each profile's memory, then exit (nothing compiled)")
    p.add_argument("--bench", action="store_true",
                   help="time prefill tokens/s and decode ms/token against torch eager with "
                        "HF's cache, interleaved (batch 1, random prompt of --prompt-len)")
    p.add_argument("--prompt-len", type=int, default=32, help="prompt length for --bench")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds for --bench")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def add_lm_args(p) -> None:
    p.add_argument("model", help="a local Hugging Face model folder, a config.json, or "
                                 "zoo:llama / zoo:gpt2")
    p.add_argument("--target", "-t", default="cpu", help="target name (see 'anychip targets')")
    p.add_argument("--max-seq-len", type=int, default=128,
                   help="KV-cache length: prompt + new tokens must fit (default 128)")
    p.add_argument("--precision", help="fp32, fp16, bf16... (per target)")


def parse_prompt_ids(items: list[str]) -> list[list[int]]:
    rows = []
    for item in items:
        text = item.strip()
        if not text:
            raise AnychipError("--prompt-ids: the prompt is empty; give at least one token id.")
        try:
            rows.append([int(t) for t in text.replace(" ", "").split(",")])
        except ValueError as exc:
            raise AnychipError(f"--prompt-ids '{item}': expected integers separated by commas, "
                               f"e.g. 1,2,3.") from exc
    return rows


def prompts_from_args(args, tokenizer):
    if bool(args.prompt_ids) == bool(args.prompt):
        raise AnychipError("give the prompt as --prompt-ids 1,2,3 or as --prompt TEXT (one of "
                           "them).")
    if args.prompt_ids:
        return parse_prompt_ids(args.prompt_ids)
    if tokenizer is None:
        raise AnychipError(f"{args.model}: --prompt needs the model's tokenizer in a local "
                           f"model folder (tokenizer.json / tokenizer_config.json); none found: "
                           f"give --prompt-ids instead.")
    rows = [list(tokenizer(text)["input_ids"]) for text in args.prompt]
    if any(not r for r in rows):
        raise AnychipError("--prompt: a prompt tokenized to nothing; give some text.")
    return rows


def run(args) -> int:
    from ..lm.compiled_lm import compile_lm
    from ..lm.sources import tokenizer_for

    if args.memory:
        return print_memory(args)
    if args.bench:
        return print_bench(args)
    tokenizer = tokenizer_for(args.model) if args.prompt else None
    prompts = prompts_from_args(args, tokenizer)
    lm = compile_lm(args.model, target=args.target, max_seq_len=args.max_seq_len,
                    precision=args.precision)
    batch = lm.prepare(prompts, None, args.max_new_tokens)   # bad input: exit 2, nothing run
    _, _, execution = lm.compile_pair(batch.ids.shape[0], batch.length, args.max_new_tokens,
                                      "logits" if args.do_sample else "token")
    if execution.mode.value not in ("executes", "simulates"):
        raise NotExecutable(f"target '{args.target}': prefill and decode compiled only "
                            f"({execution.why}); no tokens generated here.")
    result = lm.generate(prompts, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         seed=args.seed, eos_token_id=args.eos_token_id, return_result=True)
    new = result.sequences[:, result.prompt_length:]
    texts = ([tokenizer.decode(row, skip_special_tokens=True) for row in new]
             if tokenizer is not None else None)
    if args.json:
        print(json.dumps({"model": args.model, "target": args.target,
                          "execution": result.execution, "prompts": prompts,
                          "new_tokens": new.tolist(), "sequences": result.sequences.tolist(),
                          "stopped_by_eos": result.stopped_by_eos, "text": texts}))
        return 0
    print(f"{args.model} on {args.target} ({result.execution}): {new.shape[1]} new tokens per "
          f"prompt{', stopped at EOS' if result.stopped_by_eos else ''}")
    for i, row in enumerate(new):
        line = " ".join(str(int(t)) for t in row)
        print(f"  [{i}] {line}" + (f"  | {texts[i]!r}" if texts else ""))
    return 0


def print_memory(args) -> int:
    from ..lm.compiled_lm import compile_lm
    from ..lm.memory import format_table

    lm = compile_lm(args.model, target=args.target, max_seq_len=args.max_seq_len)
    rows = lm.memory()
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{args.model}: {lm.shape.num_layers} layers, {lm.shape.kv_heads} KV heads x "
              f"{lm.shape.head_dim}, vocab {lm.vocab}, trained positions "
              f"{rows[0]['model_max_positions'] if rows else '?'}; activations not counted")
        print(format_table(rows))
    return 0


def print_bench(args) -> int:
    from ..lm.bench import bench_generation, format_bench
    from ..lm.compiled_lm import compile_lm

    if args.prompt_len < 1 or args.rounds < 1 or args.max_new_tokens < 1:
        raise AnychipError("--prompt-len, --rounds and --max-new-tokens must be at least 1.")
    lm = compile_lm(args.model, target=args.target, max_seq_len=args.max_seq_len,
                    precision=args.precision)
    lm.prepare([[0] * args.prompt_len], None, args.max_new_tokens)   # fits the cache: exit 2
    result = bench_generation(lm, args.prompt_len, args.max_new_tokens, args.rounds)
    print(json.dumps(result) if args.json else format_bench(result))
    return 0
