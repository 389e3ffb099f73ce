"""The loader and compile survive mutated models (issue 19, item 9): every mutant is compiled
(exit 0) or refused with one line (exit 2); a traceback, crash or hang fails the test and the
mutant is saved. The seed changes every day (ANYCHIP_FUZZ_SEED repeats a run); the long run
for developers is scripts/fuzz_models.py. In CI: up to 300 mutants or 30 s."""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path

import pytest

from tests.compiler.fuzz.fuzzlib import mutate, run_campaign, seed_models


def _seed() -> int:
    raw = os.environ.get("ANYCHIP_FUZZ_SEED", "")
    return int(raw) if raw.isdigit() else int(datetime.date.today().strftime("%Y%m%d"))


def test_mutators_change_the_model():
    import random

    rng = random.Random(1)
    original = seed_models()[0].SerializeToString()
    changed = sum(mutate(seed_models()[0], rng)[0] != original for _ in range(50))
    assert changed >= 40


@pytest.mark.slow
def test_mutated_models_are_compiled_or_refused_in_one_line():
    seed = _seed()
    out = Path(os.environ.get("ANYCHIP_FUZZ_FAILURES",
                              Path(tempfile.gettempdir()) / "anychip-fuzz-failures"))
    report = run_campaign(seed, mutants=int(os.environ.get("ANYCHIP_FUZZ_MUTANTS", "300")),
                          seconds=float(os.environ.get("ANYCHIP_FUZZ_SECONDS", "30")),
                          out_dir=out)
    print(f"fuzz seed {seed}: {report['mutants']} mutants in {report['seconds']} s "
          f"({report['mutants_per_s']}/s): {report['outcomes']}")
    assert report["mutants"] >= 10, report   # a fuzz run that tested nothing fails
    assert not report["findings"], "\n".join(
        f"seed {seed} mutant {f.index} ({f.mutation}): {f.outcome}: {f.detail} -> {f.saved}"
        for f in report["findings"])
