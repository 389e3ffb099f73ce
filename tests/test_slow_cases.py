"""tests/slow_cases.txt names real cases: a renamed test would silently fall back into the
fast lane (and push it past 5 minutes) if its line went stale."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_listed_case_names_an_existing_test_function():
    lines = (ROOT / "tests" / "slow_cases.txt").read_text().splitlines()
    stale = []
    for node in (x.strip() for x in lines if x.strip() and not x.startswith("#")):
        path, _, rest = node.partition("::")
        name = re.sub(r"\[.*\]$", "", rest)
        file = ROOT / path
        if not file.is_file() or not re.search(rf"^def {re.escape(name)}\(",
                                               file.read_text(), re.M):
            stale.append(node)
    assert not stale, f"stale lines in tests/slow_cases.txt: {stale}"
