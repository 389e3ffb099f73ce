"""A real farm on localhost for the farm tests: a TVM RPC tracker and two `anychip serve`
servers, each a separate process on an ephemeral port, started once for this folder and
killed (process group) at the end even when a test fails.

test_matrix.py kills one of the servers in its last test: tests that need both servers come
before it (pytest runs the folder's files and their tests in order).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT_S = 300.0     # interpreter + TVM import on a loaded 2-core CI machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_children(pid: int, depth: int = 99) -> list[int]:
    """Descendants of `pid` down to `depth` generations (Linux /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    for _ in range(depth):
        frontier = [p for p, pp in parents.items() if pp in frontier]
        if not frontier:
            break
        found.extend(frontier)
    return found


def running_a_job(pid: int) -> bool:
    """True while server `pid` runs a job: TVM forks one process per session and the session
    forks the job (job.py). A session alone is no proof that a client is waiting: it lingers
    for the download and the close after the job has answered."""
    return len(proc_children(pid, depth=2)) > len(proc_children(pid, depth=1))


@dataclass
class LocalFarm:
    tracker: tuple[str, int]
    logs: Path
    servers: list[subprocess.Popen] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.tracker[0]}:{self.tracker[1]}"

    def start(self, args: list[str], name: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "w") as log:   # the child keeps its own copy
            proc = subprocess.Popen([sys.executable, *args], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_server(self, key: str = "cpu") -> subprocess.Popen:
        proc = self.start(["-m", "anychip.compiler.cli.main", "serve", "--tracker", self.address,
                           "--key", key, "--port", "0"], f"server{len(self.servers)}")
        self.servers.append(proc)
        return proc

    def wait_for(self, key: str, count: int) -> None:
        """Until the tracker lists `count` servers of `key` (0: until it answers at all)."""
        from anychip.compiler.errors import NotExecutable
        from anychip.compiler.farm.tracker import summary

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"farm process exited {proc.returncode}: "
                                       f"{self.tail()}")
            try:
                status = summary(self.tracker).get(key)
                if count == 0 or (status is not None and len(status.servers) >= count):
                    return
            except NotExecutable:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"farm not up after {START_TIMEOUT_S:g} s: {self.tail()}")

    def wait_for_port(self, port: int) -> None:
        """Until something accepts connections on 127.0.0.1:`port` (a direct server)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs[-1:]):
                raise RuntimeError(f"server exited: {self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"no server on port {port} after {START_TIMEOUT_S:g} s")

    def kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def tail(self) -> str:
        return " | ".join(f"{p.name}: {p.read_text()[-300:]}" for p in sorted(self.logs.glob("*.log")))


@pytest.fixture(scope="package")
def local_farm(tmp_path_factory):
    logs = tmp_path_factory.mktemp("farm-logs")
    port = free_port()
    farm = LocalFarm(("127.0.0.1", port), logs)
    try:
        farm.start(["-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                    "--port-end", str(port + 1)], "tracker")
        farm.wait_for("cpu", 0)
        farm.start_server()
        farm.start_server()
        farm.wait_for("cpu", 2)
        yield farm
    finally:
        for proc in farm.procs:
            farm.kill(proc)
