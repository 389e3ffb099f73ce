"""Talking to a TVM RPC tracker (`python -m tvm.exec.rpc_tracker`) with time limits.

TVM's own TrackerSession retries a refused connection for 60 s and waits for a free server
forever; the farm must answer "no tracker" or "no server for this key" in seconds (exit 3),
so the few messages anychip needs (SUMMARY, REQUEST) are sent here with TVM's own framing
(tvm.rpc.base.sendjson/recvjson) on a socket that has a timeout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import NotExecutable
from .address import CONNECT_TIMEOUT_S, format_address, open_socket


@dataclass
class KeyStatus:
    """One key of the farm: its servers (addresses) and the tracker's queue counts."""

    key: str
    servers: list[str] = field(default_factory=list)
    free: int = 0
    pending: int = 0

    @property
    def busy(self) -> int:
        return max(0, len(self.servers) - self.free)

    def as_dict(self) -> dict:
        return {"key": self.key, "servers": self.servers, "total": len(self.servers),
                "free": self.free, "busy": self.busy, "pending": self.pending}


def _handshake(addr: tuple[str, int], timeout: float):
    from tvm.rpc import base

    sock = open_socket(addr, "RPC tracker", timeout)
    try:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
    except (OSError, RuntimeError) as exc:
        sock.close()
        raise NotExecutable(f"{format_address(addr)} did not answer as a TVM RPC tracker "
                            f"({exc or type(exc).__name__}); is it the tracker's port?") from exc
    if magic != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise NotExecutable(f"{format_address(addr)} is not a TVM RPC tracker; pass the "
                            f"tracker's HOST:PORT to --tracker.")
    return sock


def summary(addr: tuple[str, int], timeout: float = CONNECT_TIMEOUT_S) -> dict[str, KeyStatus]:
    """Keys of the farm -> KeyStatus, from the tracker's SUMMARY (servers and free counts)."""
    from tvm.rpc import base

    sock = _handshake(addr, timeout)
    try:
        base.sendjson(sock, [base.TrackerCode.SUMMARY])
        reply = base.recvjson(sock)
    except (OSError, RuntimeError, ValueError) as exc:
        raise NotExecutable(f"tracker {format_address(addr)} did not answer its summary in "
                            f"{timeout:g} s ({exc or type(exc).__name__}).") from exc
    finally:
        sock.close()
    data = reply[1] if isinstance(reply, list) and len(reply) > 1 else {}
    keys: dict[str, KeyStatus] = {}
    for info in data.get("server_info", []):
        key = str(info.get("key", "")).split(":", 1)[-1]
        where = info.get("addr") or ["?", "?"]
        keys.setdefault(key, KeyStatus(key)).servers.append(format_address(where))
    for key, queue in data.get("queue_info", {}).items():
        status = keys.setdefault(key, KeyStatus(key))
        status.free, status.pending = int(queue.get("free", 0)), int(queue.get("pending", 0))
    return {k: keys[k] for k in sorted(keys)}


def request(addr: tuple[str, int], key: str, wait_s: float) -> tuple[str, int, str]:
    """Ask the tracker for a free server of `key`; (host, port, matchkey) to connect to.

    Waits at most `wait_s` for one to become free (the tracker queues the request), then
    NotExecutable."""
    from tvm.rpc import base

    sock = _handshake(addr, CONNECT_TIMEOUT_S)
    try:
        sock.settimeout(wait_s)
        base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", 1])
        reply = base.recvjson(sock)
    except (OSError, RuntimeError, ValueError) as exc:
        raise NotExecutable(f"no '{key}' server of tracker {format_address(addr)} became free "
                            f"within {wait_s:g} s; see 'anychip farm --tracker "
                            f"{format_address(addr)}'.") from exc
    finally:
        sock.close()
    if not isinstance(reply, list) or reply[0] != base.TrackerCode.SUCCESS:
        raise NotExecutable(f"tracker {format_address(addr)} refused a '{key}' request: {reply}")
    host, port, matchkey = reply[1]
    return str(host), int(port), str(matchkey)
