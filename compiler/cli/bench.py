"""`anychip bench MODEL --target T [--against ort,torch] [--json] [--plot FILE]`;
`anychip bench zoo:NAME --train [--against torch,torch.compile]` times one training step
(compiler/bench_train.py)."""

from __future__ import annotations

from .. import progress
from ..bench import ENGINES, bench, format_table, plot
from ..dispatch import choose_openmp_wait_policy
from ..errors import AnychipError
from .common import add_at_arg, add_model_args, model_options, parse_at
from .family_flags import add_family_flags, family_options_for

# The CLI imports every subcommand before any model (and torch) loads: the earliest point to
# choose OpenMP's wait policy, for anychip's library calls and torch eager alike.
choose_openmp_wait_policy()


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time a compiled model against ONNX Runtime and torch "
                                     "eager, interleaved in the same run")
    add_model_args(p)
    p.add_argument("--against", default=",".join(ENGINES),
                   help=f"comma-separated engines to compare with ({', '.join(ENGINES)}, "
                        f"also torch.compile; 'none' for anychip alone)")
    add_at_arg(p)
    p.add_argument("--warmup", type=int, default=5, metavar="N", help="warm-up runs per engine")
    p.add_argument("--repeat", type=int, default=20, metavar="N",
                   help="timed runs per engine (interleaved)")
    p.add_argument("--batch", type=int, metavar="N",
                   help="throughput at batch N: every input's leading dim set to N (a static "
                        "model compiled at that shape, a symbolic batch run at it), every "
                        "engine on the same batch")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--plot", metavar="FILE", help="write a bar chart of the latencies "
                                                  "(needs matplotlib)")
    p.add_argument("--force", action="store_true", help="replace an existing --plot file")
    p.add_argument("--profile", action="store_true",
                   help="print where the time goes: each kernel and library call, the top 15, "
                        "totals per kind (measured where the target executes, else the "
                        "backend's estimate, marked so)")
    p.add_argument("--trace", metavar="FILE", help="with --profile: write a Chrome/Perfetto "
                                                   "trace of one run")
    p.add_argument("--train", action="store_true",
                   help="time one training step (forward, loss, backward, optimizer) against "
                        "torch eager and torch.compile instead of inference; the model as for "
                        "'anychip train' (zoo:NAME with a torch module)")
    p.add_argument("--loss", choices=["cross_entropy", "token_cross_entropy", "mse"],
                   help="--train: the loss (default: from the model's output shape)")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="adamw",
                   help="--train: the optimizer of the timed step (default adamw)")
    p.add_argument("--lr", type=float, default=None, help="--train: learning rate")
    p.add_argument("--no-peak", action="store_true",
                   help="skip the peak-GFLOP/s measurement (cached after the first run)")
    from ..farm.client import add_farm_args

    add_farm_args(p)
    add_family_flags(p)   # e.g. --fast-math false, --dispatch false: compare a compile option
    p.set_defaults(func=run)


def run(args) -> int:
    from ..farm.client import spec_from_args

    farm = spec_from_args(args)
    if farm is not None and args.train:
        raise AnychipError("--train times a step here against torch; it does not run on a farm "
                           "(drop --tracker/--remote).")
    if farm is not None:
        return _remote(args, farm)
    if args.profile or args.trace:
        return _profile(args)
    if args.train:
        return _train(args)
    against = tuple(e.strip() for e in args.against.split(",") if e.strip() and e != "none")
    if args.plot:
        _refuse_existing(args.plot, args.force)
    if args.plot:
        _require_matplotlib()
    with progress.stage(f"bench {args.model} on {args.target}"):
        result = bench(args.model, target=args.target, against=against, warmup=args.warmup,
                       repeat=args.repeat, precision=args.precision, peak=not args.no_peak,
                       at=parse_at(args.at), batch=args.batch,
                       options=family_options_for(args, args.target) or None,
                       **model_options(args))
    if args.json:
        print(result.to_json())
    else:
        print(format_table(result))
    if args.plot:
        written = plot(result, args.plot, force=args.force)
        if not args.json:
            print(f"wrote {written}")
    return 0


def _train(args) -> int:
    from ..bench_train import TRAIN_ENGINES, bench_train
    from .train import make_optimizer

    if args.plot or args.shape or args.batch:
        raise AnychipError("--train times the model's own example batch; drop "
                           "--plot/--shape/--batch.")
    if family_options_for(args, args.target):
        raise AnychipError("--train compiles the train step with its own options; drop the "
                           "target family's options.")
    against = TRAIN_ENGINES if args.against == ",".join(ENGINES) else tuple(
        e.strip() for e in args.against.split(",") if e.strip() and e != "none")
    args.weight_decay, args.momentum = None, 0.0
    with progress.stage(f"bench a train step of {args.model} on {args.target}"):
        result = bench_train(args.model, target=args.target, against=against,
                             warmup=max(1, args.warmup), repeat=args.repeat, loss=args.loss,
                             optimizer=make_optimizer(args), precision=args.precision)
    if args.json:
        print(result.to_json())
    else:
        print(format_table(result))
        print(f"step: {result.notes['step']}")
    return 0


def _remote(args, farm) -> int:
    """Timed on a farm server by TVM's time evaluator; the farm's overhead reported apart."""
    from ..farm.bench import remote_bench

    if args.plot or args.against not in (",".join(ENGINES), "none"):
        raise AnychipError("with --tracker/--remote, bench times the target on the farm only "
                           "(ONNX Runtime and torch would run here: no fair ratio); drop "
                           "--against and --plot.")
    options, at = _batched_options(args)
    result = remote_bench(args.model, args.target, farm, warmup=args.warmup,
                          repeat=args.repeat, precision=args.precision, at=at, **options,
                          **family_options_for(args, args.target))
    print(result.to_json() if args.json else result.text())
    return 0


def _require_matplotlib() -> None:
    """Fail before the (long) benchmark rather than after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise AnychipError("--plot needs matplotlib, which is not installed; run 'pip install "
                           "matplotlib' or drop --plot.") from exc


def _profile(args) -> int:
    import json

    from ..profiler import format_profile, profile_model, write_trace

    if args.trace:
        _refuse_existing(args.trace, args.force)
    options, at = _batched_options(args)
    prof, events = profile_model(args.model, target=args.target, precision=args.precision,
                                 runs=args.repeat, at=at, **options,
                                 **family_options_for(args, args.target))
    if args.json:
        print(json.dumps(prof.as_dict()))
    else:
        print(format_profile(prof))
    if args.trace:
        written = write_trace(events, args.trace, force=args.force)
        if not args.json:
            print(f"wrote {written} (open it in https://ui.perfetto.dev or chrome://tracing)")
    return 0


def _batched_options(args) -> tuple[dict, dict | None]:
    """model_options and --at with --batch applied (as bench() applies its `batch`)."""
    options, at = model_options(args), parse_at(args.at)
    if args.batch is None:
        return options, at
    from ..bench import batched
    from ..frontend import load_model

    source = load_model(args.model, None, options["shapes"], options.get("dims"))
    options["shapes"], at = batched(source, args.batch, options["shapes"], at)
    return options, at


def _refuse_existing(path: str, force: bool) -> None:
    """Before the (long) run: an output file that exists needs --force."""
    from pathlib import Path

    if not force and (Path(path).exists() or Path(path).is_symlink()):
        raise AnychipError(f"{path}: already exists; pass --force to replace it.")
