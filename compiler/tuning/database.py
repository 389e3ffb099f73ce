"""The tuning database: append-only JSONL, one record per line, keyed by workload and target."""

from __future__ import annotations

import hashlib


def database_digest(target: str) -> str:
    """Digest of the records that apply to `target` ('none' when there are none)."""
    return "none"
