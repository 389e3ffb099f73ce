"""Run the CLI's compile in a child process under a memory ceiling.

A 266-byte model can make TVM's build allocate without bound; C++ then throws std::bad_alloc
from a worker thread and the process aborts (exit -6, no message), or the kernel's OOM killer
takes it and whatever else is running. The `anychip compile` command therefore re-runs itself
in a child with RLIMIT_DATA (heap and private mappings, so a thread's address-space
reservations do not count) set to limits.COMPILE_MEMORY_BYTES; whatever way the child dies,
the parent prints one line and exits 2. The Python API (anychip.compile) runs in-process as
before: a library must not fork behind its caller's back.

When stderr is a terminal the child writes to it directly (progress bars stay live); else the
child's stderr passes through a pipe that drops the C++ runtime's own abort lines, so a script
sees exactly one line.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading

CHILD_ENV = "ANYCHIP_ISOLATED_CHILD"
ISOLATED_COMMANDS = {"compile"}
_NOISE = (b"terminate called", b"  what():")


def wanted(argv: list[str]) -> bool:
    """Whether this command line should run in a child: a compile, not already a child."""
    if os.environ.get(CHILD_ENV) or os.environ.get("ANYCHIP_NO_ISOLATION"):
        return False
    words = [a for a in argv if not a.startswith("-")]
    return bool(words) and words[0] in ISOLATED_COMMANDS and "--help" not in argv \
        and "-h" not in argv


def limit_self() -> None:
    """In the child, before anything heavy is imported: lower our own RLIMIT_DATA."""
    try:
        ceiling = int(os.environ.get(CHILD_ENV, "0"))
    except ValueError:
        return
    if ceiling <= 1:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = ceiling if hard == resource.RLIM_INFINITY else min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _relay(pipe, sink) -> None:
    """Copy the child's stderr to ours line by line (a progress bar's "\r" ends a line too),
    dropping libstdc++'s terminate messages."""
    pending = b""
    for chunk in iter(lambda: os.read(pipe.fileno(), 65536), b""):
        pending += chunk
        lines = pending.splitlines(keepends=True)
        pending = lines.pop() if lines and not lines[-1].endswith((b"\n", b"\r")) else b""
        kept = b"".join(line for line in lines if not line.startswith(_NOISE))
        if kept:
            sink.write(kept)
            sink.flush()
    if pending and not pending.startswith(_NOISE):
        sink.write(pending)
        sink.flush()


def run_isolated(argv: list[str]) -> int:
    """Run `anychip ARGV` in a child under the memory ceiling; its exit code, or 2 with one
    line when it was killed or aborted."""
    from ..limits import COMPILE_MEMORY_BYTES

    env = {**os.environ, CHILD_ENV: str(COMPILE_MEMORY_BYTES)}
    tty = sys.stderr.isatty()
    cmd = [sys.executable, "-m", "anychip.compiler.cli.main", *argv]
    try:
        proc = subprocess.Popen(cmd, env=env, stderr=None if tty else subprocess.PIPE)
    except OSError as exc:
        print(f"anychip: error: cannot start the compile process ({exc.strerror or exc}).",
              file=sys.stderr)
        return 2
    relay = None
    if not tty:
        relay = threading.Thread(target=_relay, args=(proc.stderr, sys.stderr.buffer),
                                 daemon=True)
        relay.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
        code = 130
    if relay is not None:
        relay.join(timeout=5)
    if code >= 0:
        return code
    name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
    print(f"anychip: error: the compile died ({name}), most likely out of memory: it is run under "
          f"a ceiling of {COMPILE_MEMORY_BYTES / 2**30:.1f} GiB (ANYCHIP_COMPILE_MEMORY_BYTES); "
          f"give smaller static shapes or raise the ceiling.", file=sys.stderr)
    return 2
