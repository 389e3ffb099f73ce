"""`anychip analyze MODEL --target T [--json]`: the porting report of one model on one chip.

It compiles the model and reads the artifact's report.json, so it shows what the backend
really did: where each operator runs (and why, for host fallbacks), which dtypes changed,
buffer and memory use against the chip's, and the estimated time with its roofline bound.
Sections a backend does not report are left out; the command never branches on a family.
"""

from __future__ import annotations

import json

from ..driver import compile_model
from .common import add_model_args, parse_shapes, table


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="porting report: placement, fallbacks, dtypes, memory, "
                                       "estimated time")
    add_model_args(p)
    p.add_argument("--precision-mode", help="NPU precision mode, as CANN's ATC "
                   "(force_fp16, allow_fp32_to_fp16, must_keep_origin_dtype, allow_mix_precision)")
    p.add_argument("--top", type=int, default=10, help="slowest kernels to list (default 10)")
    p.add_argument("--json", action="store_true", help="print report.json's analysis as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    extra = {"precision_mode": args.precision_mode} if args.precision_mode else {}
    art = compile_model(args.model, target=args.target, precision=args.precision,
                        shapes=parse_shapes(args.shape), **extra)
    report = art.report
    if args.json:
        print(json.dumps({"model": args.model, "precision": art.precision, **report}, indent=2,
                         default=str))
    else:
        print(render(args.model, art.precision, report, args.top))
    return 0


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 2**20 else f"{n / 2**20:.1f} MB"


def render(model: str, precision: str, report: dict, top: int = 10) -> str:
    """The porting report as text: one header line, then one table per section."""
    lines = [f"{model} on {report.get('target', '?')}: precision {precision}"
             + (f" (precision_mode {report['precision_mode']})" if "precision_mode" in report
                else "")
             + f"; here: {report.get('execution_here', '?')}"]
    placement = report.get("placement")
    if placement:
        counts = placement.get("counts", {})
        lines += ["", "Placement (ONNX nodes)",
                  table(["cube", "vector", "host", "folded", "AI Core coverage"],
                        [[counts.get("cube", 0), counts.get("vector", 0), counts.get("host", 0),
                          counts.get("folded", 0),
                          f"{100 * placement.get('ai_core_coverage', 0):.1f}%"]])]
        fallbacks = placement.get("host_fallbacks", [])
        if fallbacks:
            lines += ["", "Host (AI CPU) fallbacks",
                      table(["node", "op", "reason"],
                            [[f["node"], f["op"], f["reason"]] for f in fallbacks])]
        changes = placement.get("dtype_changes", {})
        if changes:
            lines += ["", "Dtype changes", table(["change", "nodes"],
                                                 [[k, v] for k, v in sorted(changes.items())])]
    estimate = report.get("estimate") or {}
    if estimate.get("buffers"):
        lines += ["", "On-chip buffers (peak per core)",
                  table(["buffer", "peak", "capacity", "use"],
                        [[k, _kb(v["peak_bytes"]), _kb(v["capacity_bytes"]),
                          f"{100 * v['use']:.0f}%"] for k, v in estimate["buffers"].items()])]
    memory = estimate.get("memory")
    if memory:
        lines += ["", "Device memory",
                  table(["weights", "peak activations", "device", "use"],
                        [[_kb(memory["weights_bytes"]), _kb(memory["peak_activation_bytes"]),
                          _kb(memory["device_bytes"]),
                          f"{100 * (memory.get('use') or 0):.3f}%"]])]
    total = estimate.get("total")
    if total:
        roof = estimate.get("roofline", {})
        lines += ["", "Estimated time (cost model, not a measurement)",
                  table(["total", "cube", "vector", "host", "kernels", "roofline bound", "bound"],
                        [[f"{total['time_us']:.1f} us", f"{total['cube_us']:.1f} us",
                          f"{total['vector_us']:.1f} us", f"{total['host_us']:.1f} us",
                          total.get("kernels", 0), f"{roof.get('bound_time_us', 0):.1f} us",
                          roof.get("bound", "?")]])]
        kernels = sorted(estimate.get("kernels", []), key=lambda k: -k.get("time_us", 0))[:top]
        if kernels:
            lines += ["", f"Slowest {len(kernels)} kernels",
                      table(["node", "op", "unit", "dtype", "time", "bound"],
                            [[k["node"], k["op"], k["unit"], k.get("dtype") or "-",
                              f"{k.get('time_us', 0):.2f} us", k.get("bound", "-")]
                             for k in kernels])]
    atc = report.get("atc")
    if atc:
        lines += ["", f"Real hardware: {atc['model']} with", f"  {atc['command']}"]
        lines += [f"  - {note}" for note in atc.get("legalisation", [])]
    if len(lines) == 1:
        lines.append("(this target's report has no porting analysis)")
    return "\n".join(lines)
