"""Write a built executable's lib.so in a forked child, so that a failed write is an error
this process can report.

TVM's export_library has LLVM write the object file, and LLVM treats a failed write (a full
disk, a quota, a file-size limit) as fatal: it prints "LLVM ERROR: IO failure on output
stream" and exits the process with status 1, a line no caller can catch, from a user's
notebook as from the CLI. In a child the parent keeps running: a child that fails becomes
an OSError with LLVM's message, which the artifact writer turns into its one-line "cannot
write" (exit 2). Where fork is unavailable the export runs in this process.

LLVM leaves through exit(1), which runs the C exit handlers and static destructors of every
library loaded. The child inherited ONNX Runtime's thread-pool state (after a verify or a
matrix cell ran the reference) but not its threads: ORT's destructor then waited forever on a
condition variable, and the parent on the child (a matrix hung on a full disk). The child's
first exit handler therefore ends it at once with _exit.
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
            _exit_skips_handlers()
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


_HANDLER = None   # kept alive: libc calls it


def _exit_skips_handlers() -> None:
    """Make exit() in this (forked) process end it with status 1 before any other exit handler
    or static destructor runs (they run last registered first). glibc exports no `atexit`
    symbol (it is a static wrapper): the handler is registered with `__cxa_atexit`, as C++
    registers its destructors."""
    import ctypes

    global _HANDLER
    try:
        register = ctypes.CDLL(None).__cxa_atexit
    except (OSError, AttributeError):   # not glibc-like: exit runs its handlers as before
        return
    _HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _arg: os._exit(1))
    register.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    register(ctypes.cast(_HANDLER, ctypes.c_void_p), None, None)
