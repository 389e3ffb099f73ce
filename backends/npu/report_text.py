"""The npu family's report sections as text (the `render` hook of the backend contract):
placement on cube / vector / AI CPU, host fallbacks, dtype changes, on-chip buffers, device
memory, the cost model's estimate and the ATC command for the real chip. `anychip analyze`
prints them without knowing the family."""

from __future__ import annotations

from anychip.compiler.text_table import table


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 2**20 else f"{n / 2**20:.1f} MB"


def gear_summary(report: dict) -> dict:
    """One gear's line in a gear artifact's report.json (compiler/gears.py), from the report
    of that gear's static program: the buffer check (each on-chip buffer's peak per core
    against its capacity, weights + peak activations against the device memory) and the cost
    model's estimate."""
    estimate = report.get("estimate") or {}
    buffers = {k: v["use"] for k, v in (estimate.get("buffers") or {}).items()}
    memory = estimate.get("memory") or {}
    use = memory.get("use")
    worst = max(buffers, key=buffers.get) if buffers else None
    check = {"passed": all(u <= 1 for u in buffers.values()) and (use is None or use <= 1),
             "buffers_use": buffers, "worst_buffer": worst,
             "device_memory_use": use,
             "weights_bytes": memory.get("weights_bytes"),
             "peak_activation_bytes": memory.get("peak_activation_bytes"),
             "device_bytes": memory.get("device_bytes")}
    total = estimate.get("total") or {}
    roof = estimate.get("roofline") or {}
    cost = {"time_us": total.get("time_us"), "cube_us": total.get("cube_us"),
            "vector_us": total.get("vector_us"), "host_us": total.get("host_us"),
            "kernels": total.get("kernels"), "bound": roof.get("bound"),
            "bound_time_us": roof.get("bound_time_us"),
            "note": "cost model, not a measurement"}
    return {"buffer_check": check, "estimate": cost}


def _gear_sections(report: dict) -> list[tuple[str, str]]:
    """A gear artifact: one row per gear (static program), then each symbol's padding mode."""
    rows = []
    for g in report["gears"]:
        check, cost = g.get("buffer_check") or {}, g.get("estimate") or {}
        worst = check.get("worst_buffer")
        use = check.get("device_memory_use")
        rows.append([", ".join(f"{k}={v}" for k, v in g["sizes"].items()),
                     f"{g['compile_s']:.2f} s", _kb(g["size_bytes"]),
                     f"{cost['time_us']:.1f} us" if cost.get("time_us") is not None else "-",
                     cost.get("bound") or "-",
                     f"{worst} {100 * check['buffers_use'][worst]:.0f}%" if worst else "-",
                     f"{100 * use:.3f}%" if use is not None else "-",
                     ("ok" if check["passed"] else "OVER") if check else "-"])
    total = (f"{len(report['gears'])} static programs: {report.get('compile_s_total', 0):.2f} "
             f"s to compile, {_kb(report.get('size_bytes_total', 0))} in the artifact")
    out = [("Gears (one static program each; time: cost model, not a measurement)",
            table(["gear", "compile", "size", "est. time", "bound", "fullest buffer",
                   "device memory", "buffer check"], rows) + "\n" + total)]
    symbols = report.get("gear_symbols") or {}
    if symbols:
        out.append(("Gear symbols (how an input between gears runs)",
                    table(["symbol", "gears", "mode", "why"],
                          [[n, ",".join(map(str, s["gears"])), s["mode"], s["why"]]
                           for n, s in symbols.items()])))
    return out


def sections(report: dict, top: int = 10) -> list[tuple[str, str]]:
    """[(title, body)] for the parts of report.json this family writes; absent parts skipped."""
    out: list[tuple[str, str]] = []
    if report.get("gears"):
        out += _gear_sections(report)
    placement = report.get("placement")
    if placement:
        counts = placement.get("counts", {})
        out.append(("Placement (ONNX nodes)",
                    table(["cube", "vector", "host", "folded", "AI Core coverage"],
                          [[counts.get("cube", 0), counts.get("vector", 0),
                            counts.get("host", 0), counts.get("folded", 0),
                            f"{100 * placement.get('ai_core_coverage', 0):.1f}%"]])))
        fallbacks = placement.get("host_fallbacks", [])
        if fallbacks:
            out.append(("Host (AI CPU) fallbacks",
                        table(["node", "op", "reason"],
                              [[f["node"], f["op"], f["reason"]] for f in fallbacks])))
        changes = placement.get("dtype_changes", {})
        if changes:
            out.append(("Dtype changes", table(["change", "nodes"],
                                               [[k, v] for k, v in sorted(changes.items())])))
    estimate = report.get("estimate") or {}
    if estimate.get("buffers"):
        out.append(("On-chip buffers (peak per core)",
                    table(["buffer", "peak", "capacity", "use"],
                          [[k, _kb(v["peak_bytes"]), _kb(v["capacity_bytes"]),
                            f"{100 * v['use']:.0f}%"] for k, v in estimate["buffers"].items()])))
    memory = estimate.get("memory")
    if memory:
        out.append(("Device memory",
                    table(["weights", "peak activations", "device", "use"],
                          [[_kb(memory["weights_bytes"]), _kb(memory["peak_activation_bytes"]),
                            _kb(memory["device_bytes"]),
                            f"{100 * (memory.get('use') or 0):.3f}%"]])))
    total = estimate.get("total")
    if total:
        roof = estimate.get("roofline", {})
        out.append(("Estimated time (cost model, not a measurement)",
                    table(["total", "cube", "vector", "host", "kernels", "roofline bound",
                           "bound"],
                          [[f"{total['time_us']:.1f} us", f"{total['cube_us']:.1f} us",
                            f"{total['vector_us']:.1f} us", f"{total['host_us']:.1f} us",
                            total.get("kernels", 0), f"{roof.get('bound_time_us', 0):.1f} us",
                            roof.get("bound", "?")]])))
        kernels = sorted(estimate.get("kernels", []), key=lambda k: -k.get("time_us", 0))[:top]
        if kernels:
            out.append((f"Slowest {len(kernels)} kernels",
                        table(["node", "op", "unit", "dtype", "time", "bound"],
                              [[k["node"], k["op"], k["unit"], k.get("dtype") or "-",
                                f"{k.get('time_us', 0):.2f} us", k.get("bound", "-")]
                               for k in kernels])))
    atc = report.get("atc")
    if atc:
        lines = [f"  {atc['command']}"] + [f"  - {note}" for note in atc.get("legalisation", [])]
        out.append((f"Real hardware: {atc['model']} with", "\n".join(lines)))
    return out
