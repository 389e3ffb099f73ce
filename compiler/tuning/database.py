"""The tuning database: append-only JSONL, one MetaSchedule record per line, keyed by the
workload and the exact TVM target it was measured on.

TVM's own JSONDatabase aborts the whole load on one bad line (docs/security.md case 24) and
applies a record to whatever target compiles the workload. Here a corrupt or truncated line
is skipped with a warning, and a record is only ever applied to the exact target string it
was tuned for: a schedule measured on one chip is never used on another.

Line format: {"format": 1, "target": "<str(tvm target)>", "workload": Workload.as_json(),
"record": TuningRecord.as_json()}.

Where records live: databases shipped with the package (compiler/tuning/data/*.jsonl) and the
user's own (<cache dir>/tuning.jsonl, or $ANYCHIP_TUNING_DB), read in that order.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

FORMAT = 1
SHIPPED = Path(__file__).with_name("data")


class TuningWarning(UserWarning):
    """A tuning record could not be read; it was skipped."""


def user_database_path() -> Path | None:
    explicit = os.environ.get("ANYCHIP_TUNING_DB", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    from ..user_cache import user_cache_dir

    folder = user_cache_dir(create=False, warn=False)
    return folder / "tuning.jsonl" if folder else None


def database_paths() -> list[Path]:
    shipped = sorted(SHIPPED.glob("*.jsonl")) if SHIPPED.is_dir() else []
    user = user_database_path()
    return shipped + ([user] if user is not None and user.is_file() else [])


class TuningDatabase:
    """One JSONL file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def lines(self, target: str | None = None) -> list[dict]:
        """Valid records (for `target` only, when given); bad lines are skipped with a warning."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        found = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                valid = (isinstance(entry, dict) and entry.get("format") == FORMAT
                         and isinstance(entry.get("target"), str)
                         and isinstance(entry.get("workload"), list)
                         and isinstance(entry.get("record"), list))
            except ValueError:
                valid = False
            if not valid:
                warnings.warn(f"{self.path}:{number}: not a tuning record (truncated or "
                              f"corrupt line); skipped.", TuningWarning, stacklevel=2)
                continue
            if target is None or entry["target"] == target:
                found.append(entry)
        return found

    def append(self, entries: list[dict]) -> None:
        """Append whole lines under an exclusive lock, then fsync."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0, os.SEEK_END)
                if fh.tell() > 0:   # a killed writer may have left half a line: end it
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
                fh.write(data.encode())
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def entry(target: str, record) -> dict:
    """A database line for a MetaSchedule TuningRecord measured on `target`."""
    return {"format": FORMAT, "target": target, "workload": _plain(record.workload.as_json()),
            "record": _plain(record.as_json())}


def _plain(value):
    """TVM containers -> JSON-able Python values."""
    return json.loads(json.dumps(value, default=lambda o: list(o) if hasattr(o, "__len__")
                                 else str(o)))


def records_for(target: str) -> list[dict]:
    found = []
    for path in database_paths():
        found.extend(TuningDatabase(path).lines(target))
    return found


def database_digest(target: str) -> str:
    """Digest of the records that apply to `target` ('none' when there are none): part of the
    compile-cache key."""
    records = records_for(target)
    if not records:
        return "none"
    digest = hashlib.sha256()
    for rec in records:
        digest.update(json.dumps(rec, sort_keys=True).encode())
    return digest.hexdigest()


def meta_schedule_database(target: str):
    """An in-memory MetaSchedule database holding the records for `target`, or None."""
    records = records_for(target)
    if not records:
        return None
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.MemoryDatabase()
    for rec in records:
        try:
            workload = database.commit_workload(ms.database.Workload.from_json(rec["workload"]).mod)
            database.commit_tuning_record(ms.database.TuningRecord.from_json(rec["record"],
                                                                             workload))
        except Exception as exc:  # TVM rejects a record it cannot parse
            warnings.warn(f"tuning record for {target} could not be loaded ({str(exc)[:120]}); "
                          f"skipped.", TuningWarning, stacklevel=2)
    return database
