"""The npu family's report sections as text (the `render` hook of the backend contract):
placement on cube / vector / AI CPU, host fallbacks, dtype changes, on-chip buffers, device
memory, the cost model's estimate and the ATC command for the real chip. `anychip analyze`
prints them without knowing the family."""

from __future__ import annotations

from anychip.compiler.text_table import table


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 2**20 else f"{n / 2**20:.1f} MB"


def sections(report: dict, top: int = 10) -> list[tuple[str, str]]:
    """[(title, body)] for the parts of report.json this family writes; absent parts skipped."""
    out: list[tuple[str, str]] = []
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
