"""HOST:PORT parsing for --tracker, --remote and serve, with one-line errors."""

from __future__ import annotations

import ipaddress
import socket

from ..errors import AnychipError, NotExecutable

# Seconds to wait for a TCP connect or one tracker reply: an unreachable farm must fail in
# seconds (exit 3), not after TVM's own 60 s of retries.
CONNECT_TIMEOUT_S = 5.0


def parse_address(text: str, option: str) -> tuple[str, int]:
    """'host:port' (IPv6 as '[::1]:9190') -> (host, port); bad text is exit 2 naming `option`."""
    host, sep, port = (text or "").rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AnychipError(f"{option} '{text}': expected HOST:PORT, e.g. 127.0.0.1:9190.")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine (127.0.0.0/8, ::1,
    'localhost'); a name is resolved, and every address it resolves to must be loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def open_socket(addr: tuple[str, int], what: str, timeout: float = CONNECT_TIMEOUT_S):
    """A connected TCP socket with `timeout` on every operation, or NotExecutable (exit 3)."""
    try:
        sock = socket.create_connection(addr, timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise NotExecutable(f"{what} {addr[0]}:{addr[1]} is unreachable ({reason}); start it "
                            f"(see docs/farm.md) or check the address and any SSH tunnel.") \
            from exc
    sock.settimeout(timeout)
    return sock


def format_address(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
