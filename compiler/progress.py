"""Progress on long commands: the stage a command is in, and a bar where work is countable.

Why: verify, compile, matrix, conformance, tune, train and bench run for tens of seconds to
hours (a simulated verify of efficientnet_b0 took four minutes) and used to print nothing
meanwhile. On a terminal they now say which stage runs ("compile resnet18 for <target>:
lower") and count cells, cases or epochs; nothing is printed when stderr is not a terminal,
with --json, or with --quiet, so pipes, CI logs and JSON output stay as they were.

One library for all of it: tqdm (a bar that erases itself; rich would be a second dependency
for the same job). Everything goes to stderr.

    with progress.stage(f"compile {model} for {target}"):      # a transient status line
        ...
    for cell in progress.bar(cells, "matrix"):                  # countable work
        ...

TVM's own per-kernel warnings (C++ logging, written straight to file descriptor 2, e.g. one
"Cannot get maximum number of threads for AMD codegen" per kernel) are captured during a
build by `native_messages()` and summarised: one line per distinct message with its count.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator

_quiet = False


def configure(quiet: bool = False) -> None:
    """Called once by the CLI: --quiet or --json silence progress for this process."""
    global _quiet
    _quiet = bool(quiet)


def enabled() -> bool:
    """Progress shows only on an interactive stderr, and not when silenced."""
    if silenced():
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm():
    from tqdm import tqdm

    return tqdm


def silenced() -> bool:
    """--quiet or --json (whatever stderr is)."""
    return _quiet or os.environ.get("ANYCHIP_QUIET", "").strip() not in ("", "0")


def counter(total: int, desc: str = "", unit: str = "it", leave: bool = False):
    """A bar updated by hand (`.update(n)`, `.close()`), for work reported by callbacks."""
    return _tqdm()(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                   dynamic_ncols=True)


def bar(items: Iterable, desc: str = "", total: int | None = None, unit: str = "it") -> Iterable:
    """`items`, with a bar on stderr when progress is enabled (the bare iterable otherwise)."""
    if not enabled():
        return items
    return _tqdm()(items, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr,
                   dynamic_ncols=True)


class _Status:
    """A one-line status that later stages overwrite; erased at the end."""

    def __init__(self, text: str):
        self.bar = _tqdm()(total=None, desc=text, bar_format="{desc} [{elapsed}]", leave=False,
                           file=sys.stderr, dynamic_ncols=True)

    def update(self, text: str) -> None:
        self.bar.set_description_str(text)

    def close(self) -> None:
        self.bar.close()


_current: list[_Status] = []
_prefix: list[str] = []


@contextlib.contextmanager
def stage(text: str) -> Iterator[None]:
    """Show `text` (nested stages are appended: 'compile m for t: lower') while the block
    runs. A no-op when progress is disabled."""
    if not enabled():
        yield
        return
    _prefix.append(text)
    label = ": ".join(_prefix)
    if _current:
        _current[-1].update(label)
        owner = False
    else:
        _current.append(_Status(label))
        owner = True
    try:
        yield
    finally:
        _prefix.pop()
        if owner:
            _current.pop().close()
        elif _current and _prefix:
            _current[-1].update(": ".join(_prefix))


def echo(text: str) -> None:
    """A log line on stderr that does not break a bar being shown (tqdm.write then)."""
    if enabled():
        _tqdm().write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def note(text: str) -> None:
    """A line that stays (above a bar, if one shows); only when progress is enabled."""
    if enabled():
        _tqdm().write(text, file=sys.stderr)


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_PY_WARNING = re.compile(r":\d+: \w*Warning: ")
_LOG_PREFIX = re.compile(r"^\[[\d:\s.]+\]\s*\S+:\d+:\s*")  # "[12:00:01] /path/file.cc:123: "


def summarise(text: str, limit: int = 5) -> list[dict]:
    """[{message, count}] for the distinct lines of a native log, most frequent first (log
    timestamps, source locations and addresses dropped, so repeats of one warning count as
    one message)."""
    counts: Counter = Counter()
    for line in text.splitlines():
        line = _ADDRESS.sub("0x…", _LOG_PREFIX.sub("", line.strip()))
        if line:
            counts[line[:200]] += 1
    return [{"message": m, "count": c} for m, c in counts.most_common(limit)]


_BUILDER_LEFT_OPEN = "BlockBuilder destroyed with remaining blocks"


@contextlib.contextmanager
def native_messages(into: list) -> Iterator[None]:
    """Capture what native code (TVM's C++ logging) writes to file descriptor 2 during the
    block and append its summary to `into`. If the block raises, the captured text is written
    back to stderr unchanged, so nothing about a failure is hidden."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if failed and text:
                # a TVM pass that raised leaves its C++ BlockBuilder with open blocks, which
                # warns when freed: a consequence of the error the caller reports, not news
                kept = "".join(ln for ln in text.splitlines(keepends=True)
                               if _BUILDER_LEFT_OPEN not in ln)
                if kept:
                    os.write(2, kept.encode())
            elif text.strip():
                # Python warnings raised meanwhile (anychip's own, e.g. about fast math) are
                # meant for the user: they go back to stderr; the native log is summarised
                ours = [ln for ln in text.splitlines(keepends=True) if _PY_WARNING.search(ln)]
                if ours:
                    os.write(2, "".join(ours).encode())
                into.extend(summarise("".join(ln for ln in text.splitlines(keepends=True)
                                              if not _PY_WARNING.search(ln))))
