"""The client side of the farm: find a server for a target, upload an artifact, run it there,
bring the outputs back.

A FarmSpec names the farm (a tracker, or one server with --remote) and is small and picklable,
so the matrix's worker processes each open their own sessions from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AnychipError, NotExecutable
from ..inputs import encode_npz, load_npz
from .address import format_address

# How long a job may wait for a busy server of its key before giving up (seconds).
DEFAULT_WAIT_S = 900.0


class ServerLost(NotExecutable):
    """The connection to a server broke during a job (server killed, host down): the one
    failure a job is retried for, on another server."""


@dataclass(frozen=True)
class FarmSpec:
    tracker: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None
    wait_s: float = DEFAULT_WAIT_S
    timeout_s: float = 600.0

    @property
    def label(self) -> str:
        if self.tracker:
            return f"tracker {format_address(self.tracker)}"
        return f"server {format_address(self.remote)}"

    def keys(self) -> dict[str, int]:
        """Key -> number of servers (a direct --remote server counts for every key: which it
        serves is only known on connecting)."""
        if self.tracker is None:
            return {}
        from .tracker import summary

        return {k: len(s.servers) for k, s in summary(self.tracker).items() if s.servers}

    def key_for(self, target: str, keys: dict[str, int] | None = None) -> str | None:
        """The key a target's jobs go to: its own name when the farm has such servers; a
        target this machine only simulates (the npu family's simulator is a host program)
        may also use any 'cpu' server. None when no server can take it."""
        keys = self.keys() if keys is None else keys
        for key in candidate_keys(target):
            if self.tracker is None or keys.get(key):
                return key
        return None


def candidate_keys(target: str) -> list[str]:
    from ..backend import Mode
    from ..registry import execution, get_profile

    keys = [target]
    if target != "cpu" and execution(get_profile(target)).mode is Mode.SIMULATES:
        keys.append("cpu")
    return keys


@dataclass
class RemoteResult:
    outputs: dict[str, np.ndarray]
    how: str                     # the server's verb: executed / simulated
    where: str                   # "HOST (remote, key K)"
    run_seconds: float           # one run, measured on the server
    upload_seconds: float
    round_trip_seconds: float    # upload + job (process start, checks, load, run) + download
    bench: dict = field(default_factory=dict)

    @property
    def describe(self) -> str:
        return f"{self.how} on {self.where}"


def _archive(artifact) -> tuple[bytes, str]:
    """The artifact's manifest and the files it lists, as a tar in memory, and the sha256 of
    the manifest (the server checks it before anything else)."""
    from ..artifact import MANIFEST

    root = artifact.path
    manifest = (root / MANIFEST).read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in [MANIFEST, *sorted(json.loads(manifest).get("files", {}))]:
            tar.add(root / rel, arcname=rel, recursive=False)
    return buf.getvalue(), hashlib.sha256(manifest).hexdigest()


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


class Session:
    """One RPC session with one server, for one or more jobs (the server is ours meanwhile)."""

    def __init__(self, spec: FarmSpec, key: str):
        from tvm import rpc

        self.spec, self.key = spec, key
        if spec.tracker is not None:
            from .tracker import request, summary

            status = summary(spec.tracker).get(key)
            if status is None or not status.servers:
                raise NotExecutable(f"the farm at {spec.label} has no '{key}' server; start one "
                                    f"with 'anychip serve --tracker "
                                    f"{format_address(spec.tracker)} --key {key}'.")
            host, port, matchkey = request(spec.tracker, key, spec.wait_s)
        else:
            host, port = spec.remote
            matchkey = key
        self.address = format_address((host, port))
        try:
            self._sess = rpc.connect(host, port, matchkey,
                                     session_timeout=spec.timeout_s + 120)
        except Exception as exc:
            # through a tracker, a server booked but gone by now is lost like one mid-job
            error = ServerLost if spec.tracker is not None else NotExecutable
            raise error(f"server {self.address} is unreachable or refused the session "
                        f"(key '{key}'): {_one_line(exc)}.") from exc
        try:
            self.info = json.loads(self._sess.get_function("anychip.farm.info")())
        except Exception as exc:
            raise NotExecutable(f"{self.address} is a TVM RPC server but not 'anychip serve' "
                                f"({_one_line(exc)}); start it with 'anychip serve'.") from exc
        served = self.info.get("key")
        if served != key:
            raise NotExecutable(f"{self.address} serves key '{served}', not '{key}'.")
        self.where = f"{self.info.get('host', '?')} {self.address} (remote, key {key})"

    def run(self, artifact, feed: dict, mode: str = "run", warmup: int = 3,
            repeat: int = 10) -> RemoteResult:
        """Upload `artifact` and `feed`, run there, return outputs (AnychipError with the
        server's line when the job failed there; ServerLost when the connection broke)."""
        data, digest = _archive(artifact)
        buf = io.BytesIO()
        np.savez(buf, **encode_npz(feed))       # bfloat16 & co travel as bit patterns
        request = {"mode": mode, "manifest_sha256": digest, "warmup": warmup,
                   "repeat": repeat, "timeout_s": self.spec.timeout_s}
        start = time.perf_counter()
        try:
            self._sess.upload(bytearray(data), "artifact.tar")
            self._sess.upload(bytearray(buf.getvalue()), "inputs.npz")
            uploaded = time.perf_counter()
            result = json.loads(self._sess.get_function("anychip.farm.job")(json.dumps(request)))
            if result.get("ok"):
                blob = bytes(self._sess.download("outputs.npz"))
        except Exception as exc:
            raise ServerLost(f"lost {self.where} during the job: {_one_line(exc)}") from exc
        done = time.perf_counter()
        if not result.get("ok"):
            raise AnychipError(f"{artifact.target} on {self.where}: {result.get('error')}")
        with tempfile.TemporaryDirectory(prefix="anychip-farm-") as tmp:
            (Path(tmp) / "outputs.npz").write_bytes(blob)
            got = load_npz(Path(tmp) / "outputs.npz")
        outputs = {spec.name: got[spec.name] for spec in artifact.outputs}
        return RemoteResult(outputs, result["how"], self.where, float(result["run_seconds"]),
                            uploaded - start, done - start, result.get("bench", {}))

    def ping(self) -> float:
        """Seconds for one empty RPC call (the network's round trip, no job)."""
        start = time.perf_counter()
        self._sess.get_function("anychip.farm.info")()
        return time.perf_counter() - start

    def close(self) -> None:
        self._sess = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class RemoteRunner:
    """What verify needs to run an artifact remotely: call with (artifact, feed) ->
    (outputs, how, where). Picklable (the matrix sends it to worker processes)."""

    spec: FarmSpec
    key: str

    def __call__(self, artifact, feed: dict) -> tuple[dict, str, str]:
        with Session(self.spec, self.key) as session:
            result = session.run(artifact, feed)
        return result.outputs, result.how, result.where


def runner_for(spec: FarmSpec, target: str) -> RemoteRunner:
    """A RemoteRunner for `target`, or NotExecutable (exit 3) naming the missing key."""
    if spec.remote is not None:   # exit 3 now, before any compile
        from .address import open_socket

        open_socket(spec.remote, "anychip server").close()
        return _direct_runner(spec, target)
    key = spec.key_for(target)
    if key is None:
        keys = " or ".join(f"'{k}'" for k in candidate_keys(target))
        raise NotExecutable(f"the farm at {spec.label} has no {keys} server for target "
                            f"'{target}'; see 'anychip farm --tracker "
                            f"{format_address(spec.tracker)}'.")
    return RemoteRunner(spec, key)


def _direct_runner(spec: FarmSpec, target: str) -> RemoteRunner:
    """A server started without a tracker answers only to its own key: the first of the
    target's candidate keys it accepts."""
    keys = candidate_keys(target)
    last = None
    for key in keys:
        try:
            with Session(spec, key):
                return RemoteRunner(spec, key)
        except NotExecutable as exc:
            last = exc
    raise NotExecutable(f"server {format_address(spec.remote)} serves none of the keys "
                        f"{', '.join(repr(k) for k in keys)} that target '{target}' runs on "
                        f"({str(last)[:160]})")


def add_farm_args(parser) -> None:
    """--tracker / --remote, shared by run, verify, bench and matrix."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tracker", metavar="HOST:PORT",
                       help="run on the farm's servers through this TVM RPC tracker")
    group.add_argument("--remote", metavar="HOST:PORT",
                       help="run on this one 'anychip serve' server (no tracker)")


def spec_from_args(args) -> FarmSpec | None:
    from .address import parse_address

    tracker, remote = getattr(args, "tracker", None), getattr(args, "remote", None)
    if tracker:
        return FarmSpec(tracker=parse_address(tracker, "--tracker"))
    if remote:
        return FarmSpec(remote=parse_address(remote, "--remote"))
    return None


