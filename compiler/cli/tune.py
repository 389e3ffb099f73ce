"""`anychip tune MODEL --target T [--trials N | --minutes M] [--db FILE]`."""

from __future__ import annotations

import json

from .. import progress
from ..errors import AnychipError
from .common import add_model_args, parse_shapes


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="tune the kernels TVM compiles for a model (MetaSchedule) "
                                    "into the tuning database that every compile applies")
    add_model_args(p)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--trials", type=int, metavar="N",
                        help="measured candidates in all (default: 32 per task)")
    budget.add_argument("--minutes", type=float, metavar="M",
                        help="tune in rounds until M minutes have passed")
    p.add_argument("--db", metavar="FILE", help="tuning database (JSONL) to append to "
                                                "(default: tuning.jsonl in the cache folder)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--tracker", metavar="HOST:PORT",
                   help="measure candidates on the farm's servers of the target's key "
                        "(MetaSchedule's RPC runner through this TVM RPC tracker)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..farm.client import spec_from_args
    from ..tuning.tune import tune

    farm = spec_from_args(args)
    if args.precision:
        raise AnychipError("--precision is not used by 'anychip tune'; tune the target's "
                           "default precision.")
    with progress.stage(f"tune {args.model} for {args.target}"):
        report = tune(args.model, target=args.target, trials=args.trials, minutes=args.minutes,
                      database=args.db, shapes=parse_shapes(args.shape), farm=farm,
                      progress=(lambda line: None) if args.json else print)
    if args.json:
        print(json.dumps(report.__dict__, indent=2))
    else:
        print(f"{report.records_added} records for {len(report.tasks)} tasks added to "
              f"{report.database} ({report.trials} trials measured on {report.measured_on}, "
              f"{report.seconds / 60:.1f} min); "
              f"compiles for '{report.target}' apply them.")
    return 0
