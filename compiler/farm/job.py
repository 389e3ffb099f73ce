"""The server side of a farm job: registered as the packed function `anychip.farm.job` in
`anychip serve`, called by the client inside a TVM RPC session.

TVM's server forks one process per session and stops serving if that process dies badly, so
the job itself runs one level further down, in a process forked from the session (worker.py;
it inherits the modules `anychip serve` imported at start, so a job starts in milliseconds,
not the seconds a new interpreter takes to import torch and TVM) under a time limit (killed
at it) and an address-space limit (RLIMIT_AS): a segfault, a hang or a runaway allocation
ends that process, the session reports it as one line, and the server keeps serving. The
server itself never runs a kernel (no OpenMP or TVM thread pool exists before the fork). The session process dies with the server (PR_SET_PDEATHSIG), so killing a
server never leaves a job running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tarfile
import time
from pathlib import Path

from .process_limits import die_with_parent as _die_with_parent
from .process_limits import limit_this_process  # noqa: F401 - the worker's, re-exported

# Set by serve.configure() in the server process; forked sessions inherit them.
LIMITS = {"timeout_s": 600.0, "memory_gb": 16.0}
INFO: dict = {}
MAX_UPLOAD_BYTES = 8 << 30     # an artifact archive larger than this is refused unpacked



def _workpath(name: str) -> Path:
    import tvm

    return Path(tvm.get_global_func("tvm.rpc.server.workpath")(name))


def _unpack(archive: Path, dest: Path) -> None:
    """Extract the uploaded artifact with tarfile's 'data' filter: no absolute paths, no '..',
    no links or devices: an archive cannot write outside `dest`."""
    if archive.stat().st_size > MAX_UPLOAD_BYTES:
        raise ValueError(f"artifact archive is larger than {MAX_UPLOAD_BYTES >> 30} GiB")
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"artifact archive entry '{member.name}' is not a plain file")
        tar.extractall(dest, filter="data")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _job_child(jobdir: Path) -> None:
    """In the forked job process: own process group, stderr to a file, run, never return."""
    code = 70
    try:
        os.setsid()
        err = os.open(jobdir / "stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(err, 2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        from .worker import main

        code = main(jobdir)
    finally:
        os._exit(code)     # never the server's atexit handlers or TVM's finalizers


def _wait(pid: int, timeout: float) -> int | None:
    """The job's return code (-N: killed by signal N), or None when it ran past `timeout`
    (then it and its process group are killed)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            for kill in (os.killpg, os.kill):   # its group, or itself if not yet a leader
                try:
                    kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


def run_job(request_text: str) -> str:
    """Unpack artifact.tar and inputs.npz from the session's work folder, run the worker under
    the limits, return its result.json as text (errors as {"ok": false, "error": line})."""
    _die_with_parent()
    request = json.loads(request_text)
    jobdir = _workpath("job")
    shutil.rmtree(jobdir, ignore_errors=True)
    jobdir.mkdir()
    try:
        _unpack(_workpath("artifact.tar"), jobdir / "artifact")
        os.replace(_workpath("inputs.npz"), jobdir / "inputs.npz")
    except (OSError, ValueError, tarfile.TarError) as exc:
        return json.dumps({"ok": False, "error": f"upload refused: {exc}"})
    (jobdir / "request.json").write_text(json.dumps({**request, "limits": LIMITS}))
    timeout = min(float(request.get("timeout_s") or LIMITS["timeout_s"]), LIMITS["timeout_s"])
    try:
        pid = os.fork()
    except OSError as exc:
        return json.dumps({"ok": False, "error": f"could not start the job process: {exc}"})
    if pid == 0:
        _job_child(jobdir)
    returncode = _wait(pid, timeout)
    if returncode is None:
        return json.dumps({"ok": False, "error": f"job killed after its time limit of "
                                                 f"{timeout:g} s on {INFO.get('host', 'the server')}"})
    result_file = jobdir / "result.json"
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        if result.get("ok") and (jobdir / "outputs.npz").is_file():
            os.replace(jobdir / "outputs.npz", _workpath("outputs.npz"))
        return json.dumps(result)
    err = (jobdir / "stderr.txt").read_text(errors="replace") \
        if (jobdir / "stderr.txt").is_file() else ""
    last = (err.strip().splitlines() or [""])[-1][:300]
    if returncode < 0:
        why = f"job process killed by {_signal_name(returncode)}"
    else:
        why = f"job process exited with status {returncode}"
    if last:
        why += f" ({last})"
    limit = LIMITS["memory_gb"]
    hint = f"; memory limit {limit:g} GiB" if limit > 0 else ""
    return json.dumps({"ok": False, "error": f"{why}{hint}; the server is still serving"})


def server_info() -> str:
    """Who this server is: host, key, versions, limits (JSON), for `where` lines and checks."""
    return json.dumps({**INFO, "limits": LIMITS})


def register() -> None:
    """Install the farm's packed functions in this (the server's) process."""
    import tvm_ffi

    tvm_ffi.register_global_func("anychip.farm.job", run_job, override=True)
    tvm_ffi.register_global_func("anychip.farm.info", server_info, override=True)
