"""Write a built executable's lib.so in a forked child, so that a failed write is an error
this process can report.

TVM's export_library has LLVM write the object file, and LLVM treats a failed write (a full
disk, a quota, a file-size limit) as fatal: it prints "LLVM ERROR: IO failure on output
stream" and exits the process with status 1, a line no caller can catch, from a user's
notebook as from the CLI. In a child the parent keeps running: a child that fails becomes
an OSError with LLVM's message, which the artifact writer turns into its one-line "cannot
write" (exit 2). Where fork is unavailable the export runs in this process.
"""

from __future__ import annotations

import os


def export_library(executable, path: str) -> None:
    """executable.export_library(path), isolated in a child process where POSIX allows."""
    if not hasattr(os, "fork"):
        executable.export_library(path)
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: its stderr goes to the pipe; it never returns
        status = 0
        try:
            os.close(read_end)
            os.dup2(write_end, 2)
            executable.export_library(path)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, whatever it is
            os.write(2, f"\n{type(exc).__name__}: {exc}".encode(errors="replace"))
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        for chunk in iter(lambda: pipe.read(1 << 16), b""):
            if sum(len(c) for c in chunks) < (1 << 20):   # a bounded message
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        lines = [ln.strip() for ln in b"".join(chunks).decode(errors="replace").splitlines()
                 if ln.strip()]
        why = lines[-1] if lines else f"the export process ended with status {status}"
        raise OSError(why.removeprefix("LLVM ERROR: "))
