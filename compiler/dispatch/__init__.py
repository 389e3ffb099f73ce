"""Library dispatch: the one stage that hands conv2d / matmul / dense to a tuned library.

The pattern table (patterns.py) says what can be offloaded; a `Library` says what it
implements and how to call it; `partition` (partition.py) does the matching with Relax's
FuseOpsByPattern and rewrites each match into a library call. Backends own their libraries
(the host family: torch's oneDNN/MKL kernels; the cuda family: cuBLAS/cuDNN through a torch
device plug-in, torch_device.py, whose 'torch-plugin:module:device' names need no registering)
and register them here by name, so a runner can make an artifact's libraries available
before it loads lib.so (the manifest's runtime dict lists them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import AnychipError
from .partition import DispatchReport, Match, partition
from .patterns import Pattern, all_patterns


class Library(Protocol):
    """A tuned kernel library reachable from compiled code.

    `codegen` is None for a packed-function library (emit() returns a call that lib.so makes
    into a function `register()` installs in the process), or the name of a TVM BYOC codegen.
    `digest()` changes whenever the code behind the calls changes (library versions): it is
    part of the compile-cache key.
    """

    name: str
    codegen: str | None

    def implements(self, pattern: Pattern) -> bool: ...

    def accepts(self, pattern: Pattern, annotated: dict[str, Any]) -> bool: ...

    def emit(self, match: Match) -> Any: ...

    def register(self, threads: int) -> None: ...

    def digest(self) -> str: ...


_FACTORIES: dict[str, Callable[[], Library]] = {}
_INSTANCES: dict[str, Library] = {}


def register_library(name: str, factory: Callable[[], Library]) -> None:
    """Make a library known by name (backends call this when imported)."""
    _FACTORIES[name] = factory


def get_library(name: str) -> Library:
    if name not in _INSTANCES:
        if name not in _FACTORIES and name.startswith("torch-plugin:"):
            from .torch_device import library_for   # any 'torch-plugin:module:device'

            _INSTANCES[name] = library_for(name)
            return _INSTANCES[name]
        if name not in _FACTORIES:
            known = ", ".join(sorted(_FACTORIES)) or "none"
            raise AnychipError(f"kernel library '{name}' is not available in this installation "
                               f"(known: {known}); install the backend that provides it or "
                               f"recompile the model.")
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]


def make_available(names: list[str], threads: int) -> None:
    """Register the packed functions of every named library in this process (idempotent),
    running on `threads` threads, as TVM's own parallel kernels (`size_tvm_pool`).

    An artifact whose lib.so calls into a library can only be loaded after this: the Relax VM
    resolves packed functions when it is created.
    """
    size_tvm_pool(threads)
    for name in names:
        get_library(name).register(threads)


# How long an idle TVM worker spins for the next parallel kernel before it sleeps. TVM's
# default (300,000 iterations) keeps both cores busy for milliseconds after every run: in
# one process with ONNX Runtime, ORT's MobileNet-v3 went from 3.6 to 10.2 ms a call. 10,000
# bridges the gaps between one run's kernels and stops soon after (docs/performance.md).
SPIN_COUNT = 10000


def size_tvm_pool(threads: int) -> None:
    """TVM's thread pool runs parallel kernels on `threads` threads and spins SPIN_COUNT
    iterations when idle. TVM sizes it from $TVM_NUM_THREADS when it starts, else at half
    the hardware threads on x86 (it assumes hyper-threading): on a 2-vCPU machine its
    "parallel" kernels ran on one thread. The pool starts at its first parallel launch and
    is never resized, so this must come first; values the user set win."""
    if threads:
        os.environ.setdefault("TVM_NUM_THREADS", str(int(threads)))
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", str(SPIN_COUNT))


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_threads(compiled_for: int | None) -> int:
    """Threads an artifact runs its library calls on: $ANYCHIP_NUM_THREADS, else the cores it
    was compiled for, never more than this process may use."""
    wanted = os.environ.get("ANYCHIP_NUM_THREADS", "").strip()
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise AnychipError(f"ANYCHIP_NUM_THREADS={wanted!r}: give a positive integer.")
        return int(wanted)
    return max(1, min(int(compiled_for or usable_cores()), usable_cores()))


def choose_openmp_wait_policy() -> str:
    """Pick GNU OpenMP's wait policy for the libraries' worker threads, before torch loads
    libgomp (which reads it once); returns what was decided.

    Spinning workers (libgomp's default) answer the next library call at once, and on an idle
    machine that is worth the most: the BERT encoder 6.8-7.6 ms with spinning, 13.3 ms with
    sleeping workers (2 cores, best runs). On a machine where other work already fills the
    cores, a spinning worker burns the time slice of the thread it waits for: at load
    average 5 the encoder took 176-433 ms spinning and 14-18 ms sleeping, ResNet-50 132-433
    ms against 100-157 ms. So workers sleep (PASSIVE) when the load average at start is at
    least the usable cores minus one half, and spin otherwise. OMP_WAIT_POLICY or
    GOMP_SPINCOUNT set by the user always win; after torch is imported nothing can change.
    The first call decides; later calls return the same answer.
    """
    global _OPENMP_DECISION
    if _OPENMP_DECISION is None:
        _OPENMP_DECISION = _decide_openmp_wait_policy()
    return _OPENMP_DECISION


_OPENMP_DECISION: str | None = None


def _decide_openmp_wait_policy() -> str:
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        chosen = [f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                  if k in os.environ]
        return "set by the user: " + ", ".join(chosen)
    if "torch" in sys.modules:
        return "libgomp default: torch was imported before anychip could choose"
    try:
        busy = os.getloadavg()[0] >= usable_cores() - 0.5
    except OSError:   # no load average on this platform
        return "libgomp default"
    if busy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "PASSIVE: the machine was busy at start"
    return "libgomp default (spinning): the machine was idle at start"


__all__ = ["DispatchReport", "Library", "Match", "Pattern", "all_patterns",
           "choose_openmp_wait_policy", "get_library", "make_available", "partition",
           "register_library", "run_threads", "usable_cores"]
