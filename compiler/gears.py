"""Shape gears: one static program per chosen size of each symbolic dim, as vendor graph
compilers do for dynamic batch sizes and dims (docs/dynamic-shapes.md).

Why: a family whose lowering plans static tiles and buffers (`static_shapes = True` on its
backend) cannot take a symbolic dim. The artifact then holds `gears/<sizes>/`, each a
complete static artifact, and a manifest listing them. At run time the smallest gear that fits
every symbol is picked and the inputs are zero-padded up to it; the outputs are cut back.

Padding is only correct when it does not change the valid region of the outputs (a batch row
never sees another; a softmax over an unmasked padded sequence does). That is decided at
compile time on the ORIGINAL model in ONNX Runtime: run it at a valid size, and at the gear
size with the padded region zero and random (mask-like inputs always zero there, as the runner
pads them); if the valid region of any output differs, the symbol is exact-gear only: inputs
must then be exactly a gear size, and run() says so.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np

from .errors import AnychipError, InputsRejected
from .gear_runner import GearRunner, _pad, _valid, tag  # noqa: F401 - re-exported

MAX_GEAR_PROGRAMS = 16
MAX_DEFAULT_GEARS = 4


def default_gears(lo: int, hi: int) -> tuple[int, ...]:
    """Powers of two within [lo, hi] plus both bounds; more than MAX_DEFAULT_GEARS are thinned
    to that many, evenly in that list (always keeping lo and hi)."""
    sizes = sorted({lo, hi} | {1 << k for k in range(32) if lo < (1 << k) < hi})
    if len(sizes) > MAX_DEFAULT_GEARS:
        step = (len(sizes) - 1) / (MAX_DEFAULT_GEARS - 1)
        sizes = sorted({sizes[round(i * step)] for i in range(MAX_DEFAULT_GEARS)})
    return tuple(sizes)


def choose_gears(bounds: dict[str, tuple[int, int]], given: dict[str, tuple[int, ...]],
                 label: str) -> dict[str, tuple[int, ...]]:
    out = {}
    unknown = sorted(set(given) - set(bounds))
    if unknown:
        raise AnychipError(f"{label}: --gears names '{unknown[0]}', but the model's symbolic "
                           f"dims are {', '.join(bounds) or 'none'}.")
    for name, (lo, hi) in bounds.items():
        sizes = tuple(given.get(name) or default_gears(lo, hi))
        outside = [s for s in sizes if not lo <= s <= hi]
        if outside:
            raise AnychipError(f"{label}: gear {name}={outside[0]} is outside the bounds "
                               f"{lo}..{hi} of '{name}'; change --gears or --dim.")
        out[name] = sizes
    count = int(np.prod([len(v) for v in out.values()])) if out else 0
    if count > MAX_GEAR_PROGRAMS:
        raise AnychipError(f"{label}: {count} gear combinations ({' x '.join(str(len(v)) for v in out.values())}) "
                           f"exceed {MAX_GEAR_PROGRAMS}; give fewer with --gears NAME=1,8,...")
    return out


def _is_mask(spec) -> bool:
    return spec.value_range is not None and tuple(spec.value_range) == (0, 2)


def padding_check(source, name: str, gears: tuple[int, ...], bounds: dict) -> tuple[bool, str]:
    """(True, how it was checked) when padding `name` leaves the outputs' valid region
    unchanged on the original model in ONNX Runtime; (False, why) otherwise."""
    from .inputs import concrete_shape, random_inputs
    from .reference import run_onnxruntime
    from .tolerances import compare, tolerance_for

    lo, _ = bounds[name]
    gear = max(gears)
    valid = lo if lo < gear else None
    if valid is None:
        return True, "no size below the only gear: never padded"
    base = {n: b[0] for n, b in bounds.items()}
    small, big = {**base, name: valid}, {**base, name: gear}
    feed = random_inputs(source.inputs, 0, small)
    rng = np.random.default_rng(1)
    try:
        expected = run_onnxruntime(source.original, feed, source.label)
    except InputsRejected:   # the model does not take these sizes (a U-Net at an odd height)
        return False, (f"ONNX Runtime does not run the model at {name}={valid} (with every "
                       f"symbol at its lower bound), so padding cannot be checked")
    for content in ("zero", "random"):
        padded = {}
        for spec in source.inputs:
            shape = concrete_shape(spec, big)
            arr = feed[spec.name]
            if content == "zero" or _is_mask(spec):
                padded[spec.name] = _pad(arr, shape, np.zeros)
            else:
                noise = random_inputs([spec], int(rng.integers(1 << 30)), big)[spec.name]
                padded[spec.name] = _pad(arr, shape, lambda s, d, n=noise: n.astype(d).copy())
        try:
            got = run_onnxruntime(source.original, padded, source.label)
        except InputsRejected:
            return False, f"ONNX Runtime does not run the model at {name}={gear}"
        for spec, exp, out in zip(source.outputs, expected, got):
            cut = _valid(out, exp.shape)
            if cut.shape != exp.shape:
                return False, (f"output '{spec.name}' has shape {list(out.shape)} at {name}="
                               f"{gear}, which cannot be cut back to {list(exp.shape)}")
            result = compare(cut, exp, tolerance_for("fp32", exp.dtype))
            if not result.passed:
                return False, (f"padding '{name}' from {valid} to {gear} ({content} padding) "
                               f"changes output '{spec.name}' (max abs {result.max_abs:.3g}): "
                               f"the model does not mask the padded region")
    return True, (f"padding '{name}' {valid}->{gear} (zero and random) leaves every output's "
                  f"valid region unchanged in ONNX Runtime")


def static_source(source, sizes: dict[str, int]):
    """The source with every input's symbolic dims fixed at `sizes` (shape inference redone)."""
    import copy

    from .frontend import prepare
    from .inputs import concrete_shape

    shapes = {s.name: concrete_shape(s, sizes) for s in source.inputs if not s.is_static}
    ranges = {s.name: s.value_range for s in source.inputs if s.value_range is not None}
    return prepare(copy.deepcopy(source.original), source.label, None, shapes, ranges)


def compile_gears(source, target: str, options, compile_one, profile, execution):
    """Compile one static artifact per gear combination into one gear artifact."""
    from .artifact import MANIFEST, REPORT, Artifact, _sha256, _symbols, new_staging_dir, versions
    from .backend import CompileOptions
    from .importer import symbol_bounds

    from .registry import get_backend

    backend = get_backend(profile)
    bounds = symbol_bounds(source)
    gears = choose_gears(bounds, dict(options.gears or {}), source.label)
    checks = {n: padding_check(source, n, gears[n], bounds) for n in gears}
    staging = new_staging_dir()
    entries, refused, saturated = [], [], []
    try:
        for combo in itertools.product(*gears.values()):
            sizes = dict(zip(gears, combo))
            start = time.perf_counter()
            static = static_source(source, sizes)
            sub_options = CompileOptions(precision=options.precision, shapes={},
                                         opt_level=options.opt_level, extra=dict(options.extra),
                                         hot=options.hot)
            try:
                art = compile_one(static, target, sub_options)
            except InputsRejected as exc:   # a size the model refuses (a reflect pad wider)
                refused.append({"sizes": sizes, "why": str(exc)})
                continue
            seconds = time.perf_counter() - start
            rel = f"gears/{tag(sizes)}"
            shutil.copytree(art.path, staging / rel)
            size = sum(p.stat().st_size for p in (staging / rel).rglob("*") if p.is_file())
            report = art.report
            entry = {"sizes": sizes, "path": rel, "compile_s": round(seconds, 3),
                     "size_bytes": size}
            summary = backend.gear_summary(report)   # e.g. npu: buffer check, estimated time
            if summary:
                entry.update(summary)
            else:
                entry.update({"estimate": report.get("estimate") or report.get("cost"),
                              "buffers": report.get("buffers") or report.get("memory")})
            entries.append(entry)
            for item in report.get("saturated_constants") or []:   # (the same at every gear)
                if item not in saturated:
                    saturated.append(item)
            precision = art.precision
        if not entries:
            raise InputsRejected(refused[0]["why"] + " (at every gear: choose gears the model "
                                                     "accepts, --gears NAME=...)")
        symbols = {n: {"mode": "padded" if ok else "exact", "why": why, "gears": list(gears[n])}
                   for n, (ok, why) in checks.items()}
        report = {"target": target, "execution_here": execution.mode.value,
                  "execution_why": execution.why, "gears": entries, "gear_symbols": symbols,
                  "gears_refused": refused,
                  "compile_s_total": round(sum(e["compile_s"] for e in entries), 3),
                  "size_bytes_total": sum(e["size_bytes"] for e in entries)}
        if saturated:
            report["saturated_constants"] = saturated
        (staging / REPORT).write_text(json.dumps(report, indent=2, default=str))
        files = {p.relative_to(staging).as_posix(): _sha256(p)
                 for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = {
            "format_version": _format_version(), "versions": versions(), "target": profile.name,
            "family": profile.family, "profile": profile.raw, "profile_sha256": profile.sha256(),
            "model": {"label": source.label, "sha256": source.sha256},
            "inputs": [s.as_dict() for s in source.inputs],
            "outputs": [s.as_dict() for s in source.outputs],
            "symbols": _symbols(source), "gears": [{"sizes": e["sizes"], "path": e["path"]}
                                                   for e in entries],
            "gear_modes": {n: s["mode"] for n, s in symbols.items()},
            "precision": precision, "options": options.as_dict(), "runtime": {"device": "gears"}, "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Artifact(staging, manifest, temporary=True)


def _format_version() -> int:
    from .artifact import FORMAT_VERSION

    return FORMAT_VERSION


def is_gear_artifact(manifest: dict) -> bool:
    return bool(manifest.get("gears"))


def gear_paths(path: Path, manifest: dict) -> list[Path]:
    return [path / g["path"] for g in manifest.get("gears") or []]
