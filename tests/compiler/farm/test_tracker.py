"""An unreachable tracker or server is exit 3 and one line, in seconds."""

from __future__ import annotations

import time

import pytest
from anychip.compiler.cli.main import build_parser, main
from anychip.compiler.farm.address import parse_address

from .conftest import free_port


@pytest.mark.parametrize("command", [["farm"], ["verify", "MODEL", "--target", "cpu"]])
@pytest.mark.parametrize("option", ["--tracker", "--remote"])
def test_unreachable_farm_exits_3_quickly(command, option, linear_path, capsys):
    if command == ["farm"] and option == "--remote":
        pytest.skip("farm lists a tracker only")
    address = f"127.0.0.1:{free_port()}"      # nothing listens there
    argv = [str(linear_path) if a == "MODEL" else a for a in command] + [option, address]
    # imports first: the limit is on the farm's answer, not on importing TVM on a busy machine
    build_parser()
    import anychip.compiler.registry
    import anychip.compiler.verify  # noqa: F401
    import tvm.rpc  # noqa: F401
    start = time.monotonic()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 3, err
    assert time.monotonic() - start < 10
    assert len(err.splitlines()) == 1 and address in err and "unreachable" in err


@pytest.mark.parametrize("text", ["localhost", "1.2.3.4", "host:", "host:99999", ":9190"])
def test_bad_address_is_usage_error(text, capsys):
    from anychip.compiler.errors import AnychipError

    with pytest.raises(AnychipError, match="expected HOST:PORT"):
        parse_address(text, "--tracker")
    assert main(["farm", "--tracker", text]) == 2


def test_address_forms():
    assert parse_address("127.0.0.1:9190", "--tracker") == ("127.0.0.1", 9190)
    assert parse_address("[::1]:9190", "--tracker") == ("::1", 9190)
