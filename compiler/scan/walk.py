"""Walk PATH, pick the files worth reading, and analyse them (in parallel for big trees).

Guarantees: a file that cannot be read, is not UTF-8, is too big or does not parse is listed
as skipped with the reason and never stops the scan; symbolic links are followed only when
they stay inside PATH (a link out of the tree, or any linked folder, is skipped: no cycles, no
reading outside what the user named); nothing is written.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..errors import AnychipError
from .findings import Finding, ScanResult, Skipped
from .native_sources import CPP_SUFFIXES, CUDA_SUFFIXES, scan_native
from .python_source import analyse
from .requirements import scan_pyproject, scan_requirements_text

MAX_BYTES = 4 * 2**20  # bigger files are generated or data, not code to port
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", "site-packages", ".venv",
             "venv", ".tox", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
PARALLEL_FROM = 400  # below this many files a process pool costs more than it saves


def kind_of(name: str) -> str | None:
    """Which analyser reads a file, by its name (None: not read)."""
    lower = name.lower()
    if lower.endswith((".py", ".pyi")):
        return "python"
    if lower.endswith(CUDA_SUFFIXES + CPP_SUFFIXES):
        return "native"
    if lower == "pyproject.toml":
        return "pyproject"
    if lower.startswith("requirements") and lower.endswith((".txt", ".in")) or \
            lower.endswith(("-requirements.txt", "_requirements.txt")):
        return "requirements"
    return None


def discover(root: Path) -> tuple[list[tuple[str, str]], list[Skipped]]:
    """(relative path, kind) of every file to analyse, plus the links that were not followed."""
    real_root = root.resolve()
    if root.is_file():
        kind = kind_of(root.name)
        if kind is None:
            raise AnychipError(f"{root}: not a Python, CUDA, requirements or pyproject file; "
                               f"give a file of those kinds or a folder.")
        return [(root.name, kind)], []
    found, skipped = [], []
    for folder, dirs, files in os.walk(root, followlinks=False):
        rel_folder = Path(folder).relative_to(root)
        kept = []
        for d in sorted(dirs):
            if d in SKIP_DIRS or d.endswith(".egg-info"):
                continue
            if (Path(folder) / d).is_symlink():
                skipped.append(Skipped((rel_folder / d).as_posix(),
                                       "symbolic link to a folder: not followed"))
                continue
            kept.append(d)
        dirs[:] = kept
        in_requirements_dir = Path(folder).name == "requirements"
        for name in sorted(files):
            kind = kind_of(name)
            if kind is None and in_requirements_dir and name.endswith((".txt", ".in")):
                kind = "requirements"  # requirements/runtime.txt
            if kind is None:
                continue
            full = Path(folder) / name
            rel = (rel_folder / name).as_posix()
            if full.is_symlink():
                try:
                    target = full.resolve(strict=True)
                except (OSError, RuntimeError):
                    skipped.append(Skipped(rel, "broken symbolic link"))
                    continue
                if not target.is_relative_to(real_root):
                    skipped.append(Skipped(rel, "symbolic link out of the scanned folder: "
                                                "not followed"))
                    continue
            found.append((rel, kind))
    return found, skipped


def analyse_file(root: str, rel: str, kind: str) -> tuple[list[Finding], Skipped | None]:
    """Findings of one file, or why it was skipped. Never raises for a bad file."""
    full = Path(root) / rel if Path(root).is_dir() else Path(root)
    try:
        size = full.stat().st_size
        if size > MAX_BYTES:
            return [], Skipped(rel, f"{size / 2**20:.1f} MiB: over the {MAX_BYTES // 2**20} MiB "
                                    f"limit for a source file")
        data = full.read_bytes()
    except OSError as exc:
        return [], Skipped(rel, f"cannot read: {exc.strerror or exc}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], Skipped(rel, f"not UTF-8 (byte {exc.start})")
    try:
        if kind == "python":
            return analyse(rel, text), None
        if kind == "native":
            return scan_native(rel, text), None
        if kind == "pyproject":
            return scan_pyproject(rel, text), None
        return scan_requirements_text(rel, text), None
    except SyntaxError as exc:
        return [], Skipped(rel, f"does not parse: {exc.msg} (line {exc.lineno})")
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, deep nesting, TOML
        return [], Skipped(rel, f"does not parse: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}"[:200])


def _analyse_chunk(root: str, chunk: list[tuple[str, str]]):
    return [analyse_file(root, rel, kind) for rel, kind in chunk]


def scan_path(path: str | Path, jobs: int | None = None) -> ScanResult:
    """Scan a folder or one file; raises AnychipError (exit 2) for a path that is not there."""
    root = Path(path)
    if not root.exists():
        raise AnychipError(f"{path}: no such file or folder; give the codebase to scan.")
    files, skipped = discover(root)
    result = ScanResult(root=str(root), skipped=skipped, files=len(files),
                        python_files=sum(k == "python" for _, k in files))
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and len(files) >= PARALLEL_FROM:
        size = max(50, len(files) // (jobs * 8))
        chunks = [files[i:i + size] for i in range(0, len(files), size)]
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            outcomes = [o for part in pool.map(_analyse_chunk, [str(root)] * len(chunks), chunks)
                        for o in part]
    else:
        outcomes = _analyse_chunk(str(root), files)
    for (_, kind), (found, skip) in zip(files, outcomes):
        result.findings.extend(found)
        if skip:  # counted as skipped, not as scanned
            result.skipped.append(skip)
            result.files -= 1
            result.python_files -= kind == "python"
    result.sort()
    return result
