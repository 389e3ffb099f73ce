"""Judge findings against one chip (`--target`) or every chip of a family (`--family`).

Without a target a finding's severity says what happens off NVIDIA in general. With one, it
says what happens on that chip: dtypes come from the chip's profile (a bf16 tensor blocks a
chip whose profile lacks bfloat16; float64 blocks where the profile refuses it), and the
vendor's PyTorch stack (ecosystems.py) decides the rest (torch.cuda calls work as is where the
vendor's torch answers torch.cuda; Triton kernels are a port where the vendor ships Triton).
For a family, each finding takes its worst severity over the family's chips, so a gate on a
family holds on all of them.
"""

from __future__ import annotations

import functools

from ..errors import AnychipError
from ..profiles import Profile, load_profile, profile_paths
from .ecosystems import ecosystem
from .findings import SEVERITIES, Finding, ScanResult


@functools.lru_cache(maxsize=1)
def all_profiles() -> tuple[Profile, ...]:
    # load_profile validates against the common schema; no backend (and no TVM) is imported.
    return tuple(load_profile(path) for path in profile_paths())


def select(target: str | None, family: str | None) -> list[Profile]:
    profiles = all_profiles()
    if target:
        chosen = [p for p in profiles if p.name == target]
        if not chosen:
            raise AnychipError(f"unknown target '{target}'; run 'anychip targets' for the list "
                               f"({', '.join(p.name for p in profiles)}).")
        return chosen
    if family:
        chosen = [p for p in profiles if p.family == family]
        if not chosen:
            families = sorted({p.family for p in profiles})
            raise AnychipError(f"unknown family '{family}'; families: {', '.join(families)}.")
        return chosen
    return []


def _unsure(eco: dict, field: str) -> str:
    return " (unconfirmed)" if field in eco["uncertain"] else ""


def judge_one(finding: Finding, profile: Profile) -> tuple[str, str]:
    """(severity, note) of one finding on one chip."""
    name, kind, eco = profile.name, finding.kind, ecosystem(profile.vendor)
    if kind.startswith("dtype:"):
        dtype = kind.split(":", 1)[1]
        if dtype in profile.dtypes:
            return "info", f"{name} computes {dtype} natively"
        if dtype == "float64":
            if profile.raw.get("float64") == "refuse":
                return "blocks", f"{name} refuses float64; use float32"
            return "port", (f"{name} has no native float64 (lowered or run on the host); "
                            f"use float32")
        return "blocks", (f"{name} has no {dtype}; use float16 (with torch.amp.GradScaler) "
                          f"or float32")
    if eco["native_cuda"]:
        return "info", f"native on {name}"
    if kind in ("torch-cuda-api", "nvtx"):
        if eco["answers_torch_cuda"]:
            return "info", f"works as is on {name}: {eco['torch']}"
        return finding.severity, f"{name}: {eco['torch']}"
    if kind == "cuda-graph":
        if eco["answers_torch_cuda"]:
            return "port", f"{name}: {eco['torch']}; check its graph capture"
        return finding.severity, f"{name}: {eco['torch']}"
    if kind == "nccl":
        if eco["nccl_name_works"]:
            return "info", f"{name}: {eco['collective']}{_unsure(eco, 'nccl_name_works')}"
        return finding.severity, f"{name}: use {eco['collective']}"
    if kind == "triton":
        if finding.severity == "info":
            return "info", f"{name}: Triton {'via ' + eco['triton'] if eco['triton'] else 'none'}"
        if eco["triton"]:
            return "port", (f"{name}: {eco['triton']} runs Triton kernels"
                            f"{_unsure(eco, 'triton')}; check each kernel")
        return "blocks", f"{name}: no Triton backend known; rewrite as torch ops"
    if kind == "cuda-kernel":
        if eco["kernels_port"]:
            return "port", f"{name}: {eco['kernels']}{_unsure(eco, 'kernels_port')}"
        return "blocks", f"{name}: rewrite in {eco['kernels']}"
    return finding.severity, ""


def judge(result: ScanResult, profiles: list[Profile]) -> None:
    """Rewrite each finding's severity for the chosen chips; count what blocks each chip."""
    if not profiles:
        _note_dtypes(result)
        return
    result.judged_against = [p.name for p in profiles]
    result.blocking_by_target = {p.name: 0 for p in profiles}
    judged = []
    for finding in result.findings:
        verdicts = [(judge_one(finding, p), p) for p in profiles]
        for (severity, _), p in verdicts:
            result.blocking_by_target[p.name] += severity == "blocks"
        (severity, note), _ = min(verdicts, key=lambda v: SEVERITIES.index(v[0][0]))
        judged.append(finding.judged(severity, note))
    result.findings = judged


def _note_dtypes(result: ScanResult) -> None:
    """Without a target, say which chips lack each dtype the code uses (severity stays info)."""
    if not any(f.kind.startswith("dtype:") for f in result.findings):
        return
    profiles = all_profiles()
    notes = {}
    for dtype in ("bfloat16", "float64", "float8"):
        lacking = [p.name for p in profiles if dtype not in p.dtypes]
        notes[dtype] = f"not native on {', '.join(lacking)}" if lacking else ""
    result.findings = [f.judged(f.severity, notes.get(f.kind.split(":", 1)[1], ""))
                       if f.kind.startswith("dtype:") else f for f in result.findings]
