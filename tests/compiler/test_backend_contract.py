"""The backend contract: typed family options (validated, turned into CLI flags per family),
the driver's CompileContext (report sections and per-step timings), the optional hooks."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import pytest

import anychip
from anychip.compiler.backend import CompileOptions, FamilyOptions, OptionalBackendHooks, option
from anychip.compiler.cli.main import build_parser, main
from anychip.compiler.errors import AnychipError
from anychip.compiler.registry import backends, get_profile, host_profile
from tests.conftest import make_linear_model


@dataclass(frozen=True)
class _Opts(FamilyOptions):
    mode: str = option("a", "a mode", choices=("a", "b"))
    fast: bool = option(True, "go fast")
    tile: int | None = option(None, "a tile")


def test_options_parse_converts_cli_strings_and_checks_choices():
    opts = _Opts.parse({"fast": "false", "tile": "4", "mode": "b"}, "fam")
    assert (opts.fast, opts.tile, opts.mode) == (False, 4, "b")
    assert _Opts.parse({}, "fam") == _Opts()
    with pytest.raises(AnychipError, match=r"option 'mode' is one of a, b, not 'c'"):
        _Opts.parse({"mode": "c"}, "fam")
    with pytest.raises(AnychipError, match=r"option 'fast' takes true or false"):
        _Opts.parse({"fast": "maybe"}, "fam")


def test_unknown_option_names_the_key_and_the_valid_ones():
    with pytest.raises(AnychipError, match=r"unknown option 'tiel' for the 'fam' family "
                                           r"\(its options: fast, mode, tile\)"):
        _Opts.parse({"tiel": 3}, "fam", "target 'x'")


def test_compile_rejects_an_option_the_family_does_not_declare():
    cpu_options = backends()["cpu"].Options.names()
    with pytest.raises(AnychipError, match="unknown option 'precision_mode' for the 'cpu' "
                                           "family") as caught:
        anychip.compile(make_linear_model(), target="cpu", precision_mode="force_fp16")
    assert all(name in str(caught.value) for name in cpu_options)


def test_every_family_declares_typed_options_and_the_hooks():
    for family, backend in backends().items():
        assert backend.family == family
        assert issubclass(backend.Options, FamilyOptions)
        assert isinstance(backend, OptionalBackendHooks), family
        ctx = backend.context(host_profile() if family == "cpu" else next(
            p for p in anychip.compiler.registry.profiles().values() if p.family == family),
            CompileOptions())
        assert ctx.options == backend.Options()


def test_report_has_the_steps_timed_by_the_driver():
    art = anychip.compile(make_linear_model("a", "b"), target="cpu", layout="NCHW",
                          dispatch=False)
    steps = art.report["steps_s"]
    assert list(steps) == ["prepare_onnx", "import", "lower", "build"]
    assert all(isinstance(v, float) and v >= 0 for v in steps.values())
    assert steps["build"] > 0
    assert art.report["layout"] == "NCHW" and art.report["dispatch"] is None


def test_family_flags_are_grouped_per_family_in_help():
    compile_parser = build_parser()._subparsers._group_actions[0].choices["compile"]
    groups = {g.title: {a.option_strings[0] for a in g._group_actions if a.option_strings}
              for g in compile_parser._action_groups}
    for family, backend in backends().items():
        flags = {"--" + f.name.replace("_", "-") for f in backend.Options.fields()
                 if f.metadata.get("cli", True)}
        titles = [t for t in groups if t and t.startswith(f"'{family}' family options")]
        assert len(titles) == (1 if flags else 0), family
        if flags:   # a flag two families share is listed under the first one
            assert flags <= set().union(*(v for t, v in groups.items()
                                          if t and "family options" in t))
    assert "--precision-mode" not in groups.get("options", set())


def test_family_flag_for_another_family_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "lin.onnx"
    onnx.save(make_linear_model(), str(path))
    owner = next(f for f, b in backends().items() if "precision_mode" in b.Options.names())
    code = main(["compile", str(path), "--target", host_profile().name,
                 "--precision-mode", "x", "-o", str(tmp_path / "o.anychip")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert f"--precision-mode is an option of the {owner} family's targets" in err
    assert not (tmp_path / "o.anychip").exists()


def test_family_flag_reaches_the_backend_typed(tmp_path, capsys):
    path = tmp_path / "lin.onnx"
    onnx.save(make_linear_model(), str(path))
    out = tmp_path / "o.anychip"
    assert main(["compile", str(path), "--target", "cpu", "--layout", "nchw",
                 "--dispatch", "false", "-o", str(out)]) == 0
    art = anychip.load(out)
    assert art.report["layout"] == "NCHW" and art.report["dispatch"] is None
    capsys.readouterr()
    assert main(["compile", str(path), "--target", "cpu", "-o", str(tmp_path / "v.anychip"),
                 "--verbose"]) == 0
    steps = capsys.readouterr().out.splitlines()[1]
    assert steps.startswith("steps: prepare_onnx ") and " lower " in steps and " build " in steps
    assert get_profile("cpu").family == "cpu"
