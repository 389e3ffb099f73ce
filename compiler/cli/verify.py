"""`anychip verify MODEL --target T|all`: compare with ONNX Runtime, one line per target."""

from __future__ import annotations

import json

from ..errors import AnychipError, NotExecutable
from ..format_error import FORMAT_ERROR_MULTIPLIER
from ..inputs import load_npz
from ..registry import expand_targets
from ..verify import verify_model
from .compile import verbose_text
from .common import add_model_args, parse_dims, parse_shapes, shape_options, table
from .family_flags import add_family_flags, family_options_for


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="compile, run and compare with ONNX Runtime")
    add_model_args(p, "target name, comma-separated names, or 'all' (every target that "
                      "executes or simulates here)")
    p.add_argument("--rtol", type=float, help="override the tolerance table's rtol")
    p.add_argument("--atol", type=float, help="override the tolerance table's atol")
    p.add_argument("--kernels", action="store_true",
                   help="execute each generated kernel on its own on a device of this machine "
                        "and compare it with the same kernel built for the host, for targets "
                        "whose family can (see 'anychip doctor'); finds the kernel behind a "
                        "failed verify")
    p.add_argument("--inputs", metavar="IN.npz",
                   help="real inputs, keyed by the model's input names (default: seeded random "
                        "inputs; token ids over the embedding's rows, masks 0/1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also print each target's compile step timings and its family's own "
                        "report sections (as 'anychip analyze' does)")
    p.add_argument("--special-values", action="store_true",
                   help="seed the inputs with NaN, +-Inf, +-0 and subnormals and report where "
                        "the results differ from ONNX Runtime's")
    add_family_flags(p)
    from ..farm.client import add_farm_args

    add_farm_args(p)
    p.set_defaults(func=run)


def reduced_precision_hint(model: str, target: str) -> str:
    """What to do next when a reduced-precision result is out of tolerance: is it the format's
    error growing through the network, or a wrong kernel?"""
    return (f"next: 'anychip compare {model} --target {target}' shows where the error grows, "
            f"node by node; '--precision fp32' tells reduced-precision error from a wrong "
            f"result")


def run_kernels(args) -> int:
    from ..registry import get_backend, get_profile

    reports = []
    for name in args.target.split(","):
        backend = get_backend(get_profile(name))
        dims = parse_dims(getattr(args, "dim", None))   # a third-party family may lack it
        reports.append(backend.execute_kernels(args.model, name, precision=args.precision,
                                               shapes=parse_shapes(args.shape),
                                               **({"dims": dims} if dims else {})))
    for report in reports:
        print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
        if not args.json:
            for k in report.kernels:
                if k.status != "passed":
                    print(f"  {k.status}: {k.function}: {k.detail}")
    return 0 if all(r.passed for r in reports) else 1


def run_special_values(args, names: list[str]) -> int:
    from dataclasses import asdict

    from ..special_values import verify_special_values

    reports = [verify_special_values(args.model, name, precision=args.precision,
                                     shapes=parse_shapes(args.shape),
                                     **family_options_for(args, name, names))
               for name in names]
    for report in reports:
        print(json.dumps({**asdict(report), "passed": report.passed}, indent=2)
              if args.json else report.summary())
    return 0 if all(r.passed for r in reports) else 1


def run(args) -> int:
    if args.kernels:
        return run_kernels(args)
    if args.special_values:
        names = expand_targets(args.target)
        if not names:
            raise AnychipError("no target can execute or simulate here; see 'anychip targets'.")
        return run_special_values(args, names)
    names = expand_targets(args.target)
    if not names:
        raise AnychipError("no target can execute or simulate here; see 'anychip targets'.")
    family_options_for(args, names[0], names)   # a flag no selected target takes: error
    extra: dict = {}
    from ..farm.client import runner_for, spec_from_args

    farm = spec_from_args(args)
    if farm is not None:   # every target must have a server: exit 3 before any compile
        extra["remote"] = None
        remotes = {name: runner_for(farm, name) for name in names}
    reports = []
    for name in names:
        if farm is not None:
            extra["remote"] = remotes[name]
        try:
            reports.append(verify_model(args.model, target=name, rtol=args.rtol, atol=args.atol,
                                        precision=args.precision,
                                        shapes=parse_shapes(args.shape), **extra,
                                        inputs=load_npz(args.inputs) if args.inputs else None,
                                        **shape_options(args),
                                        **family_options_for(args, name, names)))
        except NotExecutable:
            if len(names) == 1 or farm is not None:   # on a farm: no server, or lost one
                raise
            continue
    if args.json:
        many = len(names) > 1 or args.target == "all"
        print(json.dumps([r.as_dict() for r in reports] if many else reports[0].as_dict(),
                         indent=2))
    elif len(reports) == 1 and args.target != "all":
        print(reports[0].summary())
        if not reports[0].passed and reports[0].precision != "fp32":
            print(reduced_precision_hint(args.model, reports[0].target))
    else:
        def result(r) -> str:
            by_format = any(o.rule == "format-error" for o in r.outputs)
            return ("PASS" if r.passed else "FAIL") + ("*" if by_format else "")

        def label(r) -> str:   # a symbolic model: one row per shape checked
            at = ",".join(f"{k}={v}" for k, v in r.sizes.items())
            return f"{r.target} ({at})" if at else r.target

        rows = [[label(r), f"{r.how} on {r.where}" if r.where else r.how, r.precision, result(r), f"{r.max_abs:.3g}",
                 f"{r.max_rel:.3g}", f"rtol={r.outputs[0].rtol:g} atol={r.outputs[0].atol:g}"]
                for top in reports for r in (top.by_shape or [top])]
        print(f"{args.model} vs ONNX Runtime (CPU provider, original model)")
        print(table(["target", "how", "precision", "result", "max abs", "max rel", "tolerance"],
                    rows))
        if any(row[3].endswith("*") for row in rows):
            print(f"* outside rtol/atol, judged by the format-error rule: RMS error vs "
                  f"{FORMAT_ERROR_MULTIPLIER:g}x that of the model run with every tensor stored "
                  f"in the precision used (verify --target T for the figures)")
    if args.verbose and not args.json:
        for r in reports:
            print(f"\n== {r.target} ==\n{verbose_text(r.analysis, r.target)}")
    return 0 if all(r.passed for r in reports) else 1
