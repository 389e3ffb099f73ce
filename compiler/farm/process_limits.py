"""Limits a farm job's child process puts on itself (its own module: the job spawns the
worker and the worker applies these, so with them in job.py the two imported each other)."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process (thread) that started it ends."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def limit_this_process(memory_gb: float) -> None:
    """Called first thing by the worker: die with the session, cap the address space."""
    import resource

    die_with_parent()
    if memory_gb > 0:
        limit = int(memory_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
