"""Library dispatch: the one stage that hands conv2d / matmul / dense to a tuned library.

The pattern table (patterns.py) says what can be offloaded; a `Library` says what it
implements and how to call it; `partition` (partition.py) does the matching with Relax's
FuseOpsByPattern and rewrites each match into a library call. Backends own their libraries
(the cpu backend: torch's oneDNN/MKL kernels; the cuda backend can name TVM's cuBLAS codegen)
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
        if name not in _FACTORIES:
            known = ", ".join(sorted(_FACTORIES)) or "none"
            raise AnychipError(f"kernel library '{name}' is not available in this installation "
                               f"(known: {known}); install the backend that provides it or "
                               f"recompile the model.")
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]


def make_available(names: list[str], threads: int) -> None:
    """Register the packed functions of every named library in this process (idempotent),
    running on `threads` threads.

    An artifact whose lib.so calls into a library can only be loaded after this: the Relax VM
    resolves packed functions when it is created.
    """
    for name in names:
        get_library(name).register(threads)


def prefer_passive_openmp() -> bool:
    """Make GNU OpenMP worker threads sleep when idle instead of spinning, if it is not too
    late (torch not imported yet) and the user chose nothing (OMP_WAIT_POLICY, GOMP_SPINCOUNT).

    libgomp reads this once, when torch loads it. On a machine shared with other work, a
    spinning worker burns the time slice the thread it waits for needs: measured on 2 cores
    at load average 5, torch's conv and matmul kernels ran 10-30x slower with the default
    policy and at ONNX Runtime's speed with PASSIVE (the BERT encoder 176-433 ms -> 14-18 ms,
    ResNet-50 132-202 ms -> 100-157 ms). True when the policy is now PASSIVE.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    if "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


__all__ = ["DispatchReport", "Library", "Match", "Pattern", "all_patterns", "get_library",
           "make_available", "partition", "prefer_passive_openmp", "register_library"]
