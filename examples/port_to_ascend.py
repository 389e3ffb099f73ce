"""Port a model to Ascend before holding the hardware: placement, precision, time, ATC.

    python examples/port_to_ascend.py [zoo:bert | model.onnx] [--target ascend-910b]

1. the porting report: which ONNX nodes run on the AI Core and which fall back to the AI CPU
   (and why), dtype changes, buffer and memory use, estimated time (`anychip analyze`);
2. how each ATC precision mode moves the numerics, verified against ONNX Runtime in the
   functional simulator;
3. what to run on the machine that has CANN: the legalised ONNX model and its `atc` line.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import anychip
from anychip.compiler.cli.analyze import render

MODES = ["force_fp16", "allow_fp32_to_fp16", "allow_mix_precision", "must_keep_origin_dtype"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="zoo:bert")
    parser.add_argument("--target", default="ascend-910b")
    args = parser.parse_args()

    art = anychip.compile(args.model, target=args.target)          # ATC's inference default
    print(render(args.model, art.precision, art.report, top=5))

    print(f"\nPrecision modes on {args.target} (simulated, vs ONNX Runtime fp32):")
    for mode in MODES:
        report = anychip.verify(args.model, target=args.target, precision_mode=mode)
        print(f"  {mode:24s} {report.summary()}")

    with tempfile.TemporaryDirectory() as tmp:
        saved = art.save(Path(tmp) / "model.anychip")
        device = saved.path / "device"
        print(f"\nFor the real chip, copy {sorted(p.name for p in device.iterdir())} and run:")
        print(f"  sh atc.sh   # {art.report['atc']['command']}")
        keep = Path.cwd() / f"{Path(args.model.replace('zoo:', '')).stem}.{args.target}.device"
        if not keep.exists():
            shutil.copytree(device, keep)
            print(f"  (copied to {keep})")


if __name__ == "__main__":
    main()
