"""Tuning records (MetaSchedule) kept per workload and exact target.

`database_digest(target)` is what the compile cache keys on: it changes whenever the records
a compile for `target` would apply change; `meta_schedule_database(target)` is what a
backend's build applies (MetaScheduleApplyDatabase on the fused module).
"""

from __future__ import annotations

from .database import (TuningDatabase, TuningWarning, database_digest, meta_schedule_database,
                       records_for)

__all__ = ["TuningDatabase", "TuningWarning", "database_digest", "meta_schedule_database",
           "records_for"]
