"""The real-architecture corpus (tests/models/corpus.py) with symbolic dims: one artifact per
target, verified against ONNX Runtime at several shapes on cpu (symbolic) and ascend-910b
(gears), compiled for one profile of each GPU family. Exports take tens of seconds each, so
every case is slow-marked (still run in CI)."""

from __future__ import annotations

import pytest

import anychip
from anychip.compiler.inputs import random_inputs
from anychip.compiler.registry import get_backend, get_profile
from anychip.compiler.verify import shape_points, verify_artifact

from . import corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama():
    return corpus.llama_gqa()


@pytest.fixture(scope="module")
def convnext():
    ok, why = corpus.torchvision_importable()
    if not ok:
        pytest.skip(f"timm needs torchvision: {why}")
    return corpus.convnext_batch()


def _shapes(report) -> list[dict]:
    return [r.sizes for r in report.by_shape]


def test_llama_gqa_rotary_one_cpu_artifact_matches_ort_at_three_sequence_lengths(llama):
    proto, dims = llama
    report = anychip.verify(proto, target="cpu", dims=dims)
    assert report.passed, report.summary()
    assert _shapes(report) == [{"seq": 2}, {"seq": 65}, {"seq": 128}]


def test_convnext_gelu_one_cpu_artifact_matches_ort_at_three_batch_sizes(convnext):
    proto, dims = convnext
    report = anychip.verify(proto, target="cpu", dims=dims)
    assert report.passed, report.summary()
    assert _shapes(report) == [{"batch": 1}, {"batch": 5}, {"batch": 8}]


def test_llama_on_ascend_gears_pads_a_masked_sequence(llama):
    proto, _ = llama
    report = anychip.verify(proto, target="ascend-910b", dims={"seq": (2, 32)},
                            gears={"seq": (32,)})   # one gear: one npu compile (CI time)
    assert report.passed, report.summary()
    assert _shapes(report) == [{"seq": 2}, {"seq": 17}, {"seq": 32}]   # 2 and 17 padded


def test_convnext_on_ascend_gears(convnext):
    proto, dims = convnext
    report = anychip.verify(proto, target="ascend-910b", dims={"batch": (1, 4)},
                            gears={"batch": (4,)})
    assert report.passed, report.summary()
    assert _shapes(report) == [{"batch": 1}, {"batch": 3}, {"batch": 4}]   # 1, 3 padded


@pytest.mark.parametrize("target", ["nvidia-h100", "biren-br104", "hygon-k100"])
@pytest.mark.parametrize("name", ["llama", "convnext"])
def test_corpus_compiles_once_for_each_gpu_family(name, target, request):
    profile = get_profile(target)
    execution = get_backend(profile).execution(profile)
    if execution.mode.value == "unavailable":
        pytest.skip(f"{target} cannot compile here: {execution.why}")
    proto, dims = request.getfixturevalue(name)
    art = anychip.compile(proto, target=target, dims=dims)
    assert art.manifest["symbols"] == {k: {"min": lo, "max": hi} for k, (lo, hi) in dims.items()}
    assert art.report["limits_checked_at_upper_bounds"] == {k: hi for k, (_, hi) in dims.items()}


# transformers families built from config (tiny sizes, no downloads): one cpu artifact with
# the symbols, verified against ONNX Runtime at the lower bound, midpoint and upper bound
TRANSFORMERS = {"distilbert": ("distilbert_batch_seq",
                               [{"batch": 1, "seq": 2}, {"batch": 3, "seq": 33},
                                {"batch": 4, "seq": 64}]),
                "gpt_neox": ("gpt_neox_seq", [{"seq": 2}, {"seq": 33}, {"seq": 64}]),
                "t5_encoder": ("t5_encoder_batch_seq",
                               [{"batch": 1, "seq": 2}, {"batch": 3, "seq": 33},
                                {"batch": 4, "seq": 64}]),
                "whisper_encoder": ("whisper_encoder_batch",
                                    [{"batch": 1}, {"batch": 3}, {"batch": 4}])}


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_transformers_family_one_cpu_artifact_matches_ort_at_each_shape(name):
    builder, shapes = TRANSFORMERS[name]
    proto, dims = getattr(corpus, builder)()
    art = anychip.compile(proto, target="cpu", dims=dims)
    assert art.manifest["symbols"] == {k: {"min": lo, "max": hi} for k, (lo, hi) in dims.items()}
    assert shape_points(art) == shapes
    for sizes in shapes:   # the one artifact, against ONNX Runtime at each shape
        report = verify_artifact(art, proto, name, sizes=sizes)
        assert report.passed, report.summary()
    feed = random_inputs(art.inputs, 0, shapes[-1])
    assert corpus.logits_std(proto, feed) > 0.5   # calibrated: not near-zero outputs


@pytest.mark.parametrize("name, dims, gears, shapes", [
    ("distilbert", {"batch": (1, 4), "seq": (2, 32)}, {"batch": (4,), "seq": (32,)},
     [{"batch": 1, "seq": 2}, {"batch": 3, "seq": 17}, {"batch": 4, "seq": 32}]),
    ("whisper_encoder", {"batch": (1, 4)}, {"batch": (4,)},
     [{"batch": 1}, {"batch": 3}, {"batch": 4}]),
])
def test_transformers_family_on_ascend_gears_pads_batch_and_masked_seq(name, dims, gears,
                                                                       shapes):
    proto, _ = getattr(corpus, TRANSFORMERS[name][0])()
    report = anychip.verify(proto, target="ascend-910b", dims=dims, gears=gears)
    assert report.passed, report.summary()
    assert _shapes(report) == shapes   # all but the last padded up to the one gear


@pytest.mark.parametrize("name, target", [("distilbert", "nvidia-h100"),
                                          ("gpt_neox", "hygon-k100"),
                                          ("t5_encoder", "biren-br104"),
                                          ("whisper_encoder", "nvidia-h100")])
def test_transformers_family_compiles_once_for_a_gpu_family(name, target):
    profile = get_profile(target)
    execution = get_backend(profile).execution(profile)
    if execution.mode.value == "unavailable":
        pytest.skip(f"{target} cannot compile here: {execution.why}")
    proto, dims = getattr(corpus, TRANSFORMERS[name][0])()
    art = anychip.compile(proto, target=target, dims=dims)
    assert art.report["limits_checked_at_upper_bounds"] == {k: hi for k, (_, hi) in dims.items()}


# CNN families from transformers' own modeling code (no torchvision: these run in CI, where
# timm cannot import): depthwise convolutions, SiLU, squeeze-excite, ConvNeXt's Conv -> GELU
VISION = ["convnext", "mobilenet_v2", "efficientnet"]


@pytest.fixture(scope="module")
def vision():
    built: dict = {}

    def get(family):
        if family not in built:
            built[family] = corpus.vision_batch(family)
        return built[family]
    return get


@pytest.mark.parametrize("family", VISION)
def test_cnn_family_one_cpu_artifact_matches_ort_at_three_batch_sizes(family, vision):
    proto, dims = vision(family)
    art = anychip.compile(proto, target="cpu", dims=dims)
    assert art.manifest["symbols"] == {"batch": {"min": 1, "max": 8}}
    shapes = shape_points(art)
    assert shapes == [{"batch": 1}, {"batch": 5}, {"batch": 8}]
    for sizes in shapes:
        report = verify_artifact(art, proto, family, sizes=sizes)
        assert report.passed, report.summary()
    assert corpus.logits_std(proto, random_inputs(art.inputs, 0, shapes[-1])) > 0.5


@pytest.mark.parametrize("family", ["convnext", "efficientnet"])
def test_cnn_family_on_ascend_gears_pads_the_batch(family, vision):
    proto, _ = vision(family)
    report = anychip.verify(proto, target="ascend-910b", dims={"batch": (1, 4)},
                            gears={"batch": (4,)})
    assert report.passed, report.summary()
    assert _shapes(report) == [{"batch": 1}, {"batch": 3}, {"batch": 4}]


@pytest.mark.parametrize("family, target", [("convnext", "nvidia-h100"),
                                            ("mobilenet_v2", "hygon-k100"),
                                            ("efficientnet", "biren-br104")])
def test_cnn_family_compiles_once_for_a_gpu_family(family, target, vision):
    profile = get_profile(target)
    execution = get_backend(profile).execution(profile)
    if execution.mode.value == "unavailable":
        pytest.skip(f"{target} cannot compile here: {execution.why}")
    proto, dims = vision(family)
    art = anychip.compile(proto, target=target, dims=dims)
    assert art.report["limits_checked_at_upper_bounds"] == {"batch": 8}


def test_bert_exported_by_torchscript_with_dims_named_per_input_matches_ort():
    """Two mechanisms at once: the mask's dims are merged with the ids' (compiler/
    equal_dims.py) and its Range(0, Shape(...)[i]) keeps the symbol
    (importer_fixes/shape_arith.py); either missing, the compile failed."""
    proto, dims = corpus.bert_torchscript_named_per_input()
    assert [[d.dim_param for d in vi.type.tensor_type.shape.dim] for vi in proto.graph.input] \
        == [["batch", "seq"], ["batch_size", "sequence_length"]]
    report = anychip.verify(proto, target="cpu", dims=dims)
    assert report.passed, report.summary()
    assert all(r.sizes["seq"] > 1 for r in report.by_shape) and len(report.by_shape) == 3


def test_wav2vec2_one_cpu_artifact_matches_ort_at_three_batch_and_sample_counts():
    """Before: the mask's Expand to a shape computed from Shape(input_values) got fresh
    run-time variables, and the compile failed ('emit_te now only supports Tensor that has
    ShapeExpr shape'); the frame count's Reshape of a scalar failed before that."""
    proto, dims = corpus.wav2vec2_batch_samples()
    report = anychip.verify(proto, target="cpu", dims=dims)
    assert report.passed, report.summary()
    assert len(report.by_shape) == 3


def test_mobilebert_one_cpu_artifact_with_library_calls_matches_ort():
    """Before: a library call's composite left its own 'seq' unbound where its input read
    'seq_1 - 1 + 1' (the trigram's padded shift) against another tree; the variable leaked into
    the model's types and the add of two dense layers lost its shape (compile failed)."""
    proto, dims = corpus.mobilebert_batch_seq()
    report = anychip.verify(proto, target="cpu", dims=dims)
    assert report.passed, report.summary()
    assert report.analysis["dispatch"]["total"] >= 1
