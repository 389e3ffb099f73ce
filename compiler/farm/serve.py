"""`anychip serve`: a TVM RPC server for the farm (tvm.rpc's own server loop and protocol).

The listening socket is bound here and handed to TVM's listen loop (tvm.rpc.server), which
registers with the tracker under the key and forks one process per session. Two things are
added around it: anychip's packed functions (job.py), and a restart of the loop when TVM
gives up on one session (it raises when a session process exits badly), so one bad session
never takes the server down.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import time

from ..errors import AnychipError
from . import job
from .address import format_address, is_loopback, open_socket

EXPOSURE = ("TVM RPC has no authentication: anyone who can reach {addr} can upload and run "
            "native code as this user. Prefer --host 127.0.0.1 and an SSH tunnel from this "
            "box to the tracker host, e.g. 'ssh -N -L 9190:127.0.0.1:9190 -R "
            "9090:127.0.0.1:9090 tracker-host' (see docs/farm.md).")


def default_key() -> str:
    """The profile that executes on this host: a GPU host's own profile when exactly one
    non-cpu profile executes here, else 'cpu'."""
    from ..backend import Mode
    from ..registry import targets

    executing = [t.name for t in targets() if t.family != "cpu"
                 and t.execution == Mode.EXECUTES.value]
    if len(executing) > 1:
        raise AnychipError(f"several profiles execute on this host ({', '.join(executing)}); "
                           f"pick the one this device is with --key.")
    return executing[0] if executing else "cpu"


def _bind(host: str, port: int, port_end: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    last = None
    for candidate in ([0] if port == 0 else range(port, max(port_end, port + 1))):
        try:
            sock.bind((host, candidate))
            sock.listen(4)
            return sock
        except OSError as exc:
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
    sock.close()
    raise AnychipError(f"cannot listen on {host}:{port}: {last}; pick another --port.")


def configure(key: str, host: str, port: int, timeout_s: float, memory_gb: float) -> None:
    import platform

    import tvm
    from anychip import __version__

    job.LIMITS.update({"timeout_s": float(timeout_s), "memory_gb": float(memory_gb)})
    job.INFO.update({"key": key, "host": socket.gethostname(), "address": f"{host}:{port}",
                     "anychip": __version__, "tvm": tvm.__version__,
                     "machine": platform.machine()})
    job.register()
    _warm_up()


def _warm_up() -> None:
    """Import what a job needs once, here: every job is forked from this process (job.py)."""
    import importlib.util

    import numpy  # noqa: F401

    from .. import artifact, inputs, registry  # noqa: F401
    from . import worker  # noqa: F401

    registry.backends()
    if importlib.util.find_spec("torch") is not None:   # the cpu backend's library calls
        import torch  # noqa: F401


def serve(host: str, port: int, key: str | None, tracker: tuple[str, int] | None,
          allow_remote: bool = False, advertise: str | None = None, timeout_s: float = 600.0,
          memory_gb: float = 16.0, port_end: int | None = None, out=print) -> None:
    """Serve until interrupted. Refuses a non-loopback address without allow_remote."""
    from tvm.rpc import server as tvm_server

    if not is_loopback(host):
        if not allow_remote:
            raise AnychipError(f"--host {host} is not a loopback address; "
                               + EXPOSURE.format(addr=f"{host}:{port}")
                               + " Pass --allow-remote to listen there anyway.")
        out("anychip serve: WARNING: " + EXPOSURE.format(addr=f"{host}:{port}"))
    if tracker is not None:
        open_socket(tracker, "RPC tracker").close()   # exit 3 now, not after TVM's retries
    key = key or default_key()
    sock = _bind(host, port, port_end or port + 1)
    bound = sock.getsockname()[1]
    configure(key, host, bound, timeout_s, memory_gb)
    tvm_server.logger.setLevel(logging.WARNING)
    where = f"registered with tracker {format_address(tracker)}" if tracker else \
        f"direct (clients use --remote {format_address((host, bound))})"
    out(f"anychip serve: key '{key}' listening on {format_address((host, bound))}, {where}; "
        f"each job in its own process (limit {timeout_s:g} s, "
        f"{'no memory limit' if memory_gb <= 0 else f'{memory_gb:g} GiB'})")
    sys.stdout.flush()
    while True:
        try:
            tvm_server._listen_loop(sock, bound, key, tracker, None, advertise)
        except RuntimeError as exc:  # one session went wrong, or the tracker went away
            print(f"anychip serve: {str(exc).splitlines()[0][:200]}; serving on",
                  file=sys.stderr, flush=True)
            time.sleep(0.5)


