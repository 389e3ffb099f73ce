"""Tuning records (MetaSchedule) kept per workload and exact target.

`database_digest(target)` is what the compile cache keys on: it changes whenever the records
that a compile for `target` would apply change.
"""

from __future__ import annotations

from .database import database_digest

__all__ = ["database_digest"]
