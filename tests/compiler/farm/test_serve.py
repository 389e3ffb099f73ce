"""`anychip serve` listens on loopback only unless told otherwise, and says why."""

from __future__ import annotations

import threading

import pytest
from anychip.compiler.cli.main import main
from anychip.compiler.farm.address import is_loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_serve_refuses_a_non_loopback_host_without_allow_remote(host, capsys):
    result = {}
    # in a thread: if serve ever listened instead of refusing, the test fails, not hangs
    thread = threading.Thread(target=lambda: result.setdefault(
        "code", main(["serve", "--host", host, "--port", "0"])), daemon=True)
    thread.start()
    thread.join(60)
    assert result.get("code") == 2, "serve did not refuse a non-loopback host"
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--allow-remote" in err and "no authentication" in err and "ssh -N" in err


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.5.0.1", True),
                                                ("::1", True), ("localhost", True),
                                                ("0.0.0.0", False), ("::", False),
                                                ("192.168.1.10", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback
