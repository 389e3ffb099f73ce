"""`anychip run ARTIFACT [--inputs in.npz] [-o out.npz]`."""

from __future__ import annotations

import numpy as np

from ..artifact import load_artifact
from ..errors import NotExecutable
from ..inputs import load_npz, save_npz


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a compiled artifact")
    p.add_argument("artifact", help="artifact folder written by 'anychip compile'")
    p.add_argument("--inputs", help=".npz keyed by the model's input names (default: seeded random)")
    p.add_argument("-o", "--output", help=".npz to write the outputs to, keyed by output names")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    from ..farm.client import add_farm_args

    add_farm_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..farm.client import runner_for, spec_from_args

    art = load_artifact(args.artifact)
    farm = spec_from_args(args)
    if farm is not None:
        from ..inputs import random_inputs

        remote = runner_for(farm, art.target)
        feed = load_npz(args.inputs) if args.inputs else random_inputs(art.inputs, args.seed)
        outputs, how, where = remote(art, feed)
        how = f"{how} on {where}, target {art.target}"
    else:
        ex = art.execution()
        if not ex.can_run:
            raise NotExecutable(f"{args.artifact}: target '{art.target}' cannot run here: "
                                f"{ex.why}.")
        feed = load_npz(args.inputs) if args.inputs else None
        outputs, how = art.run(feed, seed=args.seed), f"{ex.mode.verb} on {art.target}"
    for name, value in outputs.items():
        print(f"{name}: {value.dtype}{list(value.shape)} {summary(value)}")
    if args.output:
        save_npz(args.output, outputs, force=args.force)
        print(f"wrote {args.output} ({how})")
    else:
        print(f"({how})")
    return 0


def summary(value: np.ndarray) -> str:
    """mean/min/max of an output of any dtype and size: empty outputs, NaN/Inf and ml_dtypes
    formats (bfloat16, float8) included."""
    value = np.asarray(value)
    if value.size == 0:
        return "(empty)"
    try:
        v = value.astype(np.float64)
    except (TypeError, ValueError):
        return "(not numeric)"
    finite = v[np.isfinite(v)]
    text = (f"mean {finite.mean():.6g} min {finite.min():.6g} max {finite.max():.6g}"
            if finite.size else "no finite values")
    specials = [(int(np.isnan(v).sum()), "NaN"), (int(np.isposinf(v).sum()), "+Inf"),
                (int(np.isneginf(v).sum()), "-Inf")]
    extra = ", ".join(f"{n} {what}" for n, what in specials if n)
    return f"{text} ({extra})" if extra else text
