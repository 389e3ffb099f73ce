"""Plain-text tables for reports (the CLI's and the families' own report sections)."""

from __future__ import annotations


def table(headers: list[str], rows: list[list]) -> str:
    """A left-aligned text table (no third-party dependency for something this small)."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
