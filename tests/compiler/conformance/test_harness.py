"""The conformance harness on a fixed handful of ONNX node cases, through the whole pipeline
on cpu: plain ops pass, a loss op passes through its ONNX function body, a shape input is
specialised (and says so), a string case and an op nothing implements (ImageDecoder) are
unsupported with a reason."""

from __future__ import annotations

import json

import pytest

from anychip.compiler.cli.main import main
from anychip.compiler.conformance import cases as case_store
from anychip.compiler.conformance import run_conformance

PASSING = ["test_add", "test_relu", "test_matmul_2d", "test_softmax_axis_1",
           "test_basic_conv_with_padding", "test_nllloss_NCd1_weight",
           "test_reshape_reordered_all_dims"]
UNSUPPORTED = ["test_strnormalizer_nostopwords_nochangecase", "test_image_decoder_decode_jpeg_rgb"]


@pytest.fixture(scope="module")
def all_cases():
    return case_store.collect()


def _exact(cases, names):
    by = {c.name: c for c in cases}
    return [by[n] for n in names]


def test_collect_names_ops_and_tolerances(all_cases):
    assert len(all_cases) > 1800
    by = {c.name: c for c in all_cases}
    assert by["test_nllloss_NCd1_weight_expanded"].op == "NegativeLogLikelihoodLoss"
    assert by["test_softmax_axis_1"].op == "Softmax"
    assert (by["test_add"].rtol, by["test_add"].atol) == (1e-3, 1e-7)
    assert case_store.select(all_cases, ops=["conv"]) and \
        all(c.op == "Conv" for c in case_store.select(all_cases, ops=["conv"]))


def test_subset_on_cpu(all_cases):
    report = run_conformance("cpu", selected=_exact(all_cases, PASSING + UNSUPPORTED), jobs=2)
    status = {r.name: r for r in report.results}
    assert {n: status[n].status for n in PASSING} == {n: "passed" for n in PASSING}, \
        {n: status[n].reason for n in PASSING if status[n].status != "passed"}
    assert status["test_reshape_reordered_all_dims"].notes == ["specialised shape=[4,2,3]"]
    assert {n: status[n].status for n in UNSUPPORTED} == {n: "unsupported" for n in UNSUPPORTED}
    assert "string" in status["test_strnormalizer_nostopwords_nochangecase"].reason
    assert "ImageDecoder" in status["test_image_decoder_decode_jpeg_rgb"].reason
    assert (report.total, report.count("passed"), report.count("unsupported")) == (9, 7, 2)
    assert report.how == "executed"


def test_ort_reference_on_the_same_harness(all_cases):
    report = run_conformance("ort", selected=_exact(all_cases, ["test_add", "test_relu"]), jobs=1)
    assert [r.status for r in report.results] == ["passed", "passed"]
    assert report.how == "reference"


@pytest.mark.slow   # 75 s on the loaded 2-core machine; still in CI
def test_cli_json_and_expected_failures(tmp_path, capsys):
    tfidf = "test_tfidfvectorizer_tf_only_bigrams_skip0"   # TfIdfVectorizer: unsupported
    args = ["conformance", "--target", "cpu", "--cases", f"test_add_bcast,{tfidf}",
            "--jobs", "1", "--expected-dir", str(tmp_path)]
    assert main(args + ["--json"]) == 1          # the unsupported case is a new failure
    obj = json.loads(capsys.readouterr().out)
    assert {"target", "total", "passed", "failed", "unsupported", "cases"} <= set(obj)
    assert (obj["target"], obj["total"], obj["passed"], obj["unsupported"]) == ("cpu", 2, 1, 1)
    assert set(obj["cases"][0]) >= {"name", "op", "status", "reason"}
    assert obj["expected"]["new_failures"] == [tfidf]
    assert main(args + ["--update-expected"]) == 0
    listed = (tmp_path / "cpu.yaml").read_text()
    assert f"{tfidf}: 'unsupported:" in listed and "test_add_bcast" not in listed
    junit = tmp_path / "c.xml"
    assert main(args + ["--junit", str(junit)]) == 0   # now it matches the list
    assert 'skipped message="expected unsupported' in junit.read_text()


def test_reduced_precision_failures_are_triaged_by_the_formats_error(all_cases):
    """force_fp16 on ascend-910b: a batched MatMul misses the case's float32-level tolerance by
    rounding alone (within 3x fp16 storage's error); a Resize that is wrong in float32 too is
    beyond it. Both stay failed: the suite's tolerance is the contract."""
    names = ["test_matmul_3d", "test_resize_downsample_scales_linear"]
    report = run_conformance("ascend-910b", selected=_exact(all_cases, names), jobs=1,
                             precision_mode="force_fp16")
    status = {r.name: r for r in report.results}
    assert [status[n].status for n in names] == ["failed", "failed"]
    assert status["test_matmul_3d"].format_error == "within"
    assert status["test_resize_downsample_scales_linear"].format_error == "beyond"
    assert "within 3x fp16 storage's own error" in status["test_matmul_3d"].reason
    assert report.within_format == 1 and "1 within 3x" in report.summary()
