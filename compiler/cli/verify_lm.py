"""`anychip verify-lm MODEL --target T`: greedy token parity against Hugging Face's generate,
with per-step decode logit errors against fp32 (teacher-forced) judged by the tolerance table
and the format-error rule, and the top-k overlap per step. Exit 1 when parity fails."""

from __future__ import annotations

import json

from ..errors import AnychipError
from .generate import add_lm_args, parse_prompt_ids


def add_parser(sub) -> None:
    p = sub.add_parser("verify-lm", help="token parity of a causal LM on a target vs Hugging "
                                         "Face generate, with per-step logit errors")
    add_lm_args(p)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--prompt-ids", action="append", metavar="1,2,3",
                   help="prompt token ids (repeat for a batch; default: two prompts of "
                        "different lengths)")
    p.add_argument("--no-logits", action="store_true",
                   help="compare tokens only (skip the per-step logit report)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run, max_seq_len=64)


def run(args) -> int:
    from ..lm.parity import verify_lm

    prompts = parse_prompt_ids(args.prompt_ids) if args.prompt_ids else None
    if args.max_new_tokens < 1:
        raise AnychipError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    report = verify_lm(args.model, target=args.target, max_new_tokens=args.max_new_tokens,
                       prompts=prompts, max_seq_len=args.max_seq_len, precision=args.precision,
                       logits=not args.no_logits)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(report.summary())
        if report.steps:
            print(report.table())
        if not report.tokens_equal:
            print(f"  reference: {report.reference_tokens}")
            print(f"  {report.target}: {report.tokens}")
    return 0 if report.passed else 1
