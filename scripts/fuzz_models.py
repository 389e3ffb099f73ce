#!/usr/bin/env python
"""Long fuzz run of the loader and compile (the CI test runs a minute of it each day).

    python scripts/fuzz_models.py --minutes 30 --seed 1 --out fuzz-findings/

Prints the outcome counts and mutants per second; saves every finding (traceback, crash,
hang, multi-line error) as an .onnx file under --out and exits 1 when there is one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.compiler.fuzz.fuzzlib import run_campaign


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--mutants", type=int, default=10**9)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant")
    parser.add_argument("--out", default="fuzz-findings")
    args = parser.parse_args()
    report = run_campaign(args.seed, args.mutants, args.minutes * 60, Path(args.out),
                          args.timeout, log=lambda line: print(line, flush=True))
    print(f"seed {report['seed']}: {report['mutants']} mutants in {report['seconds']} s "
          f"({report['mutants_per_s']}/s); outcomes {report['outcomes']}; "
          f"{len(report['findings'])} findings")
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
