"""Every CLI value is checked at parse time: bad values are one line and exit 2, never an
"internal error" (issue 19, item 5)."""

from __future__ import annotations

import pytest
from anychip.compiler.cli.main import main

BAD = [
    ["compile", "m.onnx", "--shape", "x=99999999999999999999x4"],
    ["compile", "m.onnx", "--shape", "x=100000x100000x100"],
    ["compile", "m.onnx", "--shape", "x=1x-3"],
    ["run", "a.anychip", "--seed", "-1"],
    ["run", "a.anychip", "--seed", "99999999999999999999999"],
    ["run", "a.anychip", "--seed", "1.5"],
    ["conformance", "--jobs", "0"],
    ["conformance", "--timeout", "inf"],
    ["verify", "m.onnx", "--rtol", "nan"],
    ["verify", "m.onnx", "--atol", "-1"],
    ["bench", "m.onnx", "--repeat", "-3"],
    ["analyze", "m.onnx", "--top", "abc"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a[2:]) or a[0] for a in BAD])
def test_bad_values_are_one_line_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and "internal error" not in err, err
    assert argv[2] in err    # names the option


def test_good_values_still_parse():
    from anychip.compiler.cli.main import build_parser

    args = build_parser().parse_args(["run", "a.anychip", "--seed", "4294967295"])
    assert args.seed == 4294967295
    args = build_parser().parse_args(["compile", "m.onnx", "--shape", "x=1x3x224x224"])
    assert args.shape == ["x=1x3x224x224"]
