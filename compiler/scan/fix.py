"""`anychip scan --fix`: the mechanical rewrites that are safe, as a unified diff.

Rewrites (each keeps the program's meaning on NVIDIA and makes it run on any accelerator):
  x.cuda() / x.cuda(non_blocking=b)   -> x.to(DEVICE) / x.to(DEVICE, non_blocking=b)
  torch.cuda.amp.autocast(kw...)      -> torch.amp.autocast(DEVICE.type, kw..., dtype=float16)
  torch.cuda.amp.GradScaler(kw...)    -> torch.amp.GradScaler(DEVICE.type, kw...)
  torch.autocast("cuda", ...)         -> torch.autocast(DEVICE.type, ...)
  torch.cuda.synchronize(...)         -> torch.accelerator.synchronize(...) (torch >= 2.6)
with one device helper per file, inserted after the leading imports:
  DEVICE = torch.accelerator.current_accelerator() or torch.device("cpu")
autocast gets dtype=torch.float16 when it had none because torch.cuda.amp.autocast defaulted
to float16 while torch.amp.autocast takes the device's default (bfloat16 on the CPU).
Calls with positional arguments whose meaning differs between the two APIs are left alone.

Edits are made on the source bytes at the AST's positions (formatting and comments elsewhere
untouched); overlapping edits keep the outer one. A file whose rewrite would not parse is left
alone. Nothing is written unless --write, and then atomically (compiler/atomic.py).
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_file
from .findings import ScanResult
from .python_source import _Analyser
from .rules import AMP_DEVICE_TYPE_CALLS
from .syntax import is_cuda_string, source_lines

_NEWLINE = re.compile(rb"\r\n|\r|\n")


@dataclass
class FileFix:
    path: str
    old: str
    new: str
    rewrites: int


@dataclass
class FixPlan:
    files: list[FileFix] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def diff(self) -> str:
        return "".join(unified_diff(f.path, f.old, f.new) for f in self.files)


def _lines(text: str) -> list[str]:
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def unified_diff(path: str, old: str, new: str) -> str:
    """A diff `git apply` and `patch -p1` accept, including a missing final newline."""
    out = []
    for line in difflib.unified_diff(_lines(old), _lines(new), f"a/{path}", f"b/{path}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _helper_name(tree: ast.Module) -> str:
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
             for a in n.args + n.kwonlyargs + n.posonlyargs}
    return "DEVICE" if "DEVICE" not in used else "ANYCHIP_DEVICE"


def _insertion_point(tree: ast.Module) -> tuple[int, bool]:
    """The line after the docstring and leading imports, and whether they import torch.

    When `import torch` comes later (after a sys.path tweak, say), the helper brings its own
    so it never runs before torch is bound.
    """
    line, has_torch = 0, False
    for i, stmt in enumerate(tree.body):
        docstring = (i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                     and isinstance(stmt.value.value, str))
        if not (docstring or isinstance(stmt, (ast.Import, ast.ImportFrom))):
            break
        line = stmt.end_lineno or stmt.lineno
        if isinstance(stmt, ast.Import):
            has_torch |= any(a.name.split(".")[0] == "torch" and a.asname is None
                             or a.asname == "torch" for a in stmt.names)
    return line, has_torch


def plan_file(path: str, source: str) -> tuple[str | None, int, str]:
    """(new source or None, rewrites, note) for one Python file."""
    tree = ast.parse(source)
    analyser = _Analyser(path, source_lines(source))
    analyser.collect(tree)
    torch_name = analyser.aliases.get("torch")
    if torch_name not in (None, "torch"):
        return None, 0, f"{path}: 'torch' names {torch_name} here; not rewritten"
    data = source.encode()
    starts = [0] + [m.end() for m in _NEWLINE.finditer(data)]

    def at(line: int, col: int) -> int:
        return starts[line - 1] + col

    def text(node: ast.AST) -> str:
        return data[at(node.lineno, node.col_offset):at(node.end_lineno,
                                                          node.end_col_offset)].decode()

    dev = _helper_name(tree)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        qual = analyser.qualname(node.func)
        kws = [text(k) for k in node.keywords]
        span = (at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset))
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "cuda" and qual is None
                and not node.args and all(k.arg == "non_blocking" for k in node.keywords)):
            value = node.func.value
            start = at(value.end_lineno, value.end_col_offset)
            edits.append((start, span[1], f".to({', '.join([dev] + kws)})"))
        elif qual == "torch.cuda.amp.autocast" and not node.args:
            extra = [] if any(k.arg == "dtype" for k in node.keywords) else ["dtype=torch.float16"]
            edits.append((*span, f"torch.amp.autocast({', '.join([dev + '.type'] + kws + extra)})"))
        elif qual == "torch.cuda.amp.GradScaler" and not node.args:
            edits.append((*span, f"torch.amp.GradScaler({', '.join([dev + '.type'] + kws)})"))
        elif qual == "torch.cuda.synchronize":
            func = node.func
            edits.append((at(func.lineno, func.col_offset),
                          at(func.end_lineno, func.end_col_offset), "torch.accelerator.synchronize"))
        elif qual in AMP_DEVICE_TYPE_CALLS:
            for arg in node.args[:1] + [k.value for k in node.keywords if k.arg == "device_type"]:
                if isinstance(arg, ast.Constant) and is_cuda_string(arg):
                    edits.append((at(arg.lineno, arg.col_offset),
                                  at(arg.end_lineno, arg.end_col_offset), f"{dev}.type"))
    if not edits:
        return None, 0, ""
    edits.sort()
    kept, skipped, last_end = [], 0, -1
    for edit in edits:
        if edit[0] < last_end:
            skipped += 1  # inside an outer rewrite, which copied the original text
            continue
        kept.append(edit)
        last_end = edit[1]
    new = data
    for start, end, replacement in reversed(kept):
        new = new[:start] + replacement.encode() + new[end:]
    needs_helper = any(dev in r for _, _, r in kept)
    if needs_helper:
        line, has_torch = _insertion_point(tree)
        newline = _NEWLINE.search(data)
        eol = newline.group().decode() if newline else "\n"
        helper = ("" if has_torch else "import torch" + eol) + \
            f'{dev} = torch.accelerator.current_accelerator() or torch.device("cpu")' + \
            f"  # anychip scan --fix{eol}"
        offset = starts[line] if line < len(starts) else len(data)
        prefix = b"" if offset == 0 or data[:offset].endswith((b"\n", b"\r")) else eol.encode()
        new = new[:offset] + prefix + helper.encode() + new[offset:]
    result = new.decode()
    try:
        ast.parse(result)
    except SyntaxError as exc:
        return None, 0, f"{path}: the rewrite would not parse ({exc.msg}); left alone"
    note = f"{path}: {skipped} nested rewrite(s) left for a second --fix run" if skipped else ""
    return result, len(kept), note


def plan(result: ScanResult) -> FixPlan:
    """Rewrite every Python file of a scan that has a fixable finding."""
    root = Path(result.root)
    fixes = FixPlan()
    for rel in sorted({f.path for f in result.findings if f.fixable and f.path.endswith(".py")}):
        full = root / rel if root.is_dir() else root
        if full.is_symlink():
            fixes.notes.append(f"{rel}: symbolic link; rewrite its target instead")
            continue
        data = full.read_bytes()
        if data.startswith(b"\xef\xbb\xbf"):
            fixes.notes.append(f"{rel}: starts with a byte-order mark; not rewritten")
            continue
        old = data.decode()
        new, count, note = plan_file(rel, old)
        if note:
            fixes.notes.append(note)
        if new is not None and new != old:
            fixes.files.append(FileFix(rel, old, new, count))
    return fixes


def write(result: ScanResult, fixes: FixPlan) -> list[Path]:
    """Apply a plan in place, atomically per file, keeping each file's permissions."""
    root = Path(result.root)
    written = []
    for fix in fixes.files:
        dest = root / fix.path if root.is_dir() else root
        mode = stat.S_IMODE(dest.stat().st_mode)

        def fill(tmp: Path, text=fix.new, mode=mode) -> None:
            tmp.write_bytes(text.encode())
            os.chmod(tmp, mode)

        written.append(write_file(dest, fill, force=True))
    return written
