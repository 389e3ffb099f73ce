"""Remote run and verify on a real local farm (conftest.py): same numbers as here, hashes
checked on the server before anything loads, a crashing artifact ends its job only."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from anychip.compiler.artifact import LIBRARY, MANIFEST, Artifact, _sha256
from anychip.compiler.cli.main import main
from anychip.compiler.driver import compile_model
from anychip.compiler.errors import AnychipError
from anychip.compiler.farm.client import FarmSpec, Session, runner_for
from anychip.compiler.inputs import load_npz, random_inputs


def _saved(path, tmp_path):
    art = compile_model(str(path), target="cpu")
    return art.save(tmp_path / "linear.anychip")


def test_remote_verify_gives_the_local_numbers(local_farm, linear_path, tmp_path, capsys):
    art = _saved(linear_path, tmp_path)
    feed = random_inputs(art.inputs, 3)
    outputs, how, where = runner_for(FarmSpec(tracker=local_farm.tracker), "cpu")(art, feed)
    local = art.run(feed)
    assert how == "executed" and where.endswith("(remote, key cpu)")
    assert list(outputs) == list(local)
    for name in local:   # the same lib.so on the same CPU: bit for bit
        assert outputs[name].dtype == local[name].dtype
        np.testing.assert_array_equal(outputs[name], local[name])

    assert main(["verify", str(linear_path), "--target", "cpu", "--json"]) == 0
    here = json.loads(capsys.readouterr().out)
    assert main(["verify", str(linear_path), "--target", "cpu", "--json",
                 "--tracker", local_farm.address]) == 0
    there = json.loads(capsys.readouterr().out)
    assert here["where"] == "" and there["where"].endswith("(remote, key cpu)")
    assert re.search(r" 127\.0\.0\.1:\d+ \(remote, key cpu\)$", there["where"])
    for key in ("passed", "how", "precision", "max_abs", "max_rel"):
        assert there[key] == here[key], key
    assert [o["max_abs"] for o in there["outputs"]] == [o["max_abs"] for o in here["outputs"]]
    assert main(["verify", str(linear_path), "--target", "cpu",
                 "--tracker", local_farm.address]) == 0
    line = capsys.readouterr().out
    assert line.startswith("PASS") and "(executed on " in line and "(remote, key cpu)" in line


def test_run_cli_on_the_farm_writes_the_local_outputs(local_farm, linear_path, tmp_path,
                                                      capsys):
    art = _saved(linear_path, tmp_path)
    out = tmp_path / "out.npz"
    assert main(["run", str(art.path), "--seed", "4", "-o", str(out),
                 "--tracker", local_farm.address]) == 0
    printed = capsys.readouterr().out
    assert "(remote, key cpu), target cpu)" in printed and "executed on " in printed
    got = load_npz(out)
    np.testing.assert_array_equal(got["out/y"], art.run(None, seed=4)["out/y"])


def test_altered_library_is_refused_before_loading(local_farm, linear_path, tmp_path):
    good = _saved(linear_path, tmp_path)
    bad_dir = tmp_path / "altered.anychip"
    shutil.copytree(good.path, bad_dir)
    with open(bad_dir / LIBRARY, "ab") as fh:
        fh.write(b"\0")
    # built directly: load_artifact here would refuse it before it ever reached the server
    bad = Artifact(bad_dir, json.loads((bad_dir / MANIFEST).read_text()))
    feed = random_inputs(good.inputs, 0)
    with Session(FarmSpec(tracker=local_farm.tracker), "cpu") as session:
        with pytest.raises(AnychipError, match=r"refused before loading.*'lib\.so' does not "
                                               r"match its sha256") as info:
            session.run(bad, feed)
        assert "\n" not in str(info.value)
        result = session.run(good, feed)     # the same server still serves
    np.testing.assert_array_equal(result.outputs["out/y"], good.run(feed)["out/y"])


@pytest.mark.parametrize(("body", "error"), [
    ("abort();", "killed by SIGABRT.*still serving"),
    ("for (;;) pause();", "job killed after its time limit of 3 s"),
], ids=["crash", "hang"])
def test_crashing_or_hanging_artifact_ends_its_job_not_the_server(local_farm, linear_path,
                                                                 tmp_path, body, error):
    """A lib.so whose initialiser aborts or never returns (hashes made consistent): the job
    dies (SIGABRT; killed at the 3 s limit the client asked for), the error is one line, and
    the server runs the next job."""
    good = _saved(linear_path, tmp_path)
    crash_dir = tmp_path / "crash.anychip"
    shutil.copytree(good.path, crash_dir)
    source = tmp_path / "crash.c"
    source.write_text("#include <stdlib.h>\n#include <unistd.h>\n"
                      f"__attribute__((constructor)) static void bad(void) {{ {body} }}\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(crash_dir / LIBRARY), str(source)],
                   check=True)
    manifest = json.loads((crash_dir / MANIFEST).read_text())
    manifest["files"][LIBRARY] = _sha256(crash_dir / LIBRARY)
    (crash_dir / MANIFEST).write_text(json.dumps(manifest))
    crash = Artifact(crash_dir, manifest)
    feed = random_inputs(good.inputs, 0)
    spec = FarmSpec(tracker=local_farm.tracker, timeout_s=3)
    with pytest.raises(AnychipError, match=error) as info:
        runner_for(spec, "cpu")(crash, feed)
    assert "\n" not in str(info.value)
    outputs, how, _ = runner_for(FarmSpec(tracker=local_farm.tracker), "cpu")(good, feed)
    assert how == "executed"
    np.testing.assert_array_equal(outputs["out/y"], good.run(feed)["out/y"])
    assert all(s.poll() is None for s in local_farm.servers)


@pytest.mark.slow
def test_remote_option_reaches_one_server_without_tracker(local_farm, linear_path, capsys):
    """`--remote HOST:PORT`: a server started without --tracker; ascend-910b (simulated) goes
    to its 'cpu' key."""
    from .conftest import free_port

    port = free_port()
    local_farm.start(["-m", "anychip.compiler.cli.main", "serve", "--port", str(port)],
                     "direct")
    address = f"127.0.0.1:{port}"
    local_farm.wait_for_port(port)
    assert main(["verify", str(linear_path), "--target", "ascend-910b", "--remote", address,
                 "--json"]) == 0
    there = json.loads(capsys.readouterr().out)
    assert there["how"] == "simulated" and there["passed"]
    assert there["where"].endswith(f" {address} (remote, key cpu)")


def test_key_without_server_is_exit_3_quickly(local_farm, linear_path, capsys):
    start = time.monotonic()
    code = main(["verify", str(linear_path), "--target", "nvidia-h100",
                 "--tracker", local_farm.address])
    err = capsys.readouterr().err.strip()
    assert code == 3 and time.monotonic() - start < 15
    assert len(err.splitlines()) == 1 and "no 'nvidia-h100' server" in err


def test_remote_bench_times_on_the_server_with_overhead_apart(local_farm, linear_path, capsys):
    assert main(["bench", str(linear_path), "--target", "cpu", "--tracker", local_farm.address,
                 "--warmup", "1", "--repeat", "4", "--against", "none", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["how"] == "executed" and result["where"].endswith("(remote, key cpu)")
    assert result["runs"] == 4 and "time_evaluator" in result["timer"]
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    assert result["rpc_round_trip_ms"] > 0 and result["upload_s"] > 0
    assert result["job_overhead_s"] > 0
