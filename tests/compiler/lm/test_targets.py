"""The LM path on every family: npu simulates (token parity and per-step logit errors vs
fp32), cuda and gpu compile both functions and say they were not run."""

from __future__ import annotations

import pytest
from anychip.compiler.errors import NotExecutable

from .conftest import MAX_SEQ_LEN, PROMPTS, tiny_lm


@pytest.mark.slow
def test_ascend_910b_decode_parity_with_per_step_errors():
    from anychip.compiler.lm.parity import verify_lm

    report = verify_lm(tiny_lm("qwen2"), target="ascend-910b", max_new_tokens=6,
                       prompts=PROMPTS, max_seq_len=MAX_SEQ_LEN)
    assert report.execution == "simulated" and report.precision == "fp16"
    assert len(report.steps) == 6
    # fp16 really is in use: logits differ from fp32, by about fp16 storage's own error
    assert max(s.max_abs for s in report.steps) > 1e-6
    for s in report.steps:
        assert s.passed, s
        assert s.format_rmse is not None and s.rmse <= 3 * s.format_rmse + 1e-3
        assert s.topk_overlap >= 0.6
    if report.tokens_equal:
        assert report.tokens == report.reference_tokens and report.first_divergence is None
    else:   # a divergence is reported at the first position where the rows differ
        first = report.first_divergence
        assert [r[:first] for r in report.tokens] == [r[:first] for r in report.reference_tokens]
    assert report.passed and "ascend-910b (simulated, fp16)" in report.summary()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["nvidia-h100", "hygon-k100", "biren-br104"])
def test_gpu_families_compile_prefill_and_decode(target):
    import anychip

    lm = anychip.compile_lm(tiny_lm("llama", layers=1), target=target, max_seq_len=32)
    try:
        prefill, decode, execution = lm.compile_pair(1, 4, 4)
    except NotExecutable as exc:   # e.g. hygon without ld.lld 22: the toolchain is missing here
        pytest.skip(str(exc))
    for art in (prefill, decode):
        assert art.target == target and art.library_path.is_file()
        assert [s.name for s in art.outputs] == ["next_token", "k_cache_out", "v_cache_out"]
    assert prefill.inputs[0].shape == (1, 8) and decode.inputs[0].shape == (1, 1)
    if execution.mode.value == "compiles-only":
        with pytest.raises(NotExecutable, match="compiled only"):
            lm.generate([[1, 2, 3, 4]], max_new_tokens=4)
