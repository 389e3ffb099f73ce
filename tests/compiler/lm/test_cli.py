"""anychip generate / verify-lm: tokens on stdout equal HF's, bad input is exit 2 in one line."""

from __future__ import annotations

import json

import pytest
from anychip.compiler.cli.main import main

from .conftest import CONFIGS, MAX_SEQ_LEN, PROMPTS, hf_greedy, tiny_lm


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A model folder holding only config.json: built from it with seed 0 (= tiny_lm)."""
    folder = tmp_path_factory.mktemp("tinyllama")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama",
                                                    **CONFIGS["llama"][2]}))
    return folder


@pytest.fixture(scope="module")
def llama_dir_with_tokenizer(llama_dir, tmp_path_factory):
    """The same model in its own folder, plus a word-level tokenizer: 'tN' is token id N."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("tinyllama_tok")
    (folder / "config.json").write_text((llama_dir / "config.json").read_text())
    llama_dir = folder

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(256)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(llama_dir / "tokenizer.json"))
    (llama_dir / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    return llama_dir


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.mark.slow
def test_generate_json_gives_hf_greedy_tokens(llama_dir, capsys):
    args = ["generate", str(llama_dir), "--max-seq-len", str(MAX_SEQ_LEN), "--max-new-tokens",
            "16", "--json"] + [a for p in PROMPTS for a in ("--prompt-ids", ",".join(map(str, p)))]
    assert main(args + ["--eos-token-id", "100000"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = hf_greedy(tiny_lm("llama"), PROMPTS, 16)[:, 6:]
    assert out["execution"] == "executed" and out["target"] == "cpu"
    assert out["new_tokens"] == expected.tolist()


@pytest.mark.slow
def test_generate_text_prompts_use_the_folder_tokenizer(llama_dir_with_tokenizer, capsys):
    texts = [" ".join(f"t{i}" for i in p) for p in PROMPTS]
    args = ["generate", str(llama_dir_with_tokenizer), "--max-seq-len", str(MAX_SEQ_LEN),
            "--max-new-tokens", "16", "--eos-token-id", "100000", "--json"]
    assert main(args + [a for t in texts for a in ("--prompt", t)]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = hf_greedy(tiny_lm("llama"), PROMPTS, 16)[:, 6:]
    assert out["prompts"] == PROMPTS and out["new_tokens"] == expected.tolist()
    assert out["text"][0] == " ".join(f"t{i}" for i in expected[0])


@pytest.mark.parametrize("extra, match", [
    (["--prompt-ids", ",".join(["1"] * 70)], "max_seq_len is 64"),
    (["--prompt-ids", "1,2,3", "--max-new-tokens", "62"], "ask for at most 61"),
    (["--prompt-ids", ""], "empty"),
    (["--prompt-ids", "1,2,999"], "token id 999 is outside the vocabulary"),
    (["--prompt-ids", "1,x"], "expected integers"),
    (["--prompt", "hello"], "needs the model's tokenizer"),
    ([], "give the prompt"),
])
def test_generate_bad_input_exit_2(llama_dir, capsys, extra, match):
    code = main(["generate", str(llama_dir), "--max-seq-len", "64"] + extra)
    assert code == 2
    err = _one_line_error(capsys)
    assert match in err
    assert capsys.readouterr().out == ""          # nothing reported as generated


def test_generate_unknown_model_exit_2(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope"), "--prompt-ids", "1"]) == 2
    assert "no such file or folder" in _one_line_error(capsys)
    assert main(["generate", "zoo:resnet18", "--prompt-ids", "1"]) == 2
    assert "no such LM in the zoo" in _one_line_error(capsys)


def test_memory_report_per_profile(llama_dir, capsys):
    assert main(["generate", str(llama_dir), "--memory", "--json"]) == 0
    rows = {r["target"]: r for r in json.loads(capsys.readouterr().out)}
    h100 = rows["nvidia-h100"]
    # 2 (K and V) x 2 layers x 2 KV heads x head_dim 16 x 4 bytes
    assert h100["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4
    model = tiny_lm("llama")
    weights = sum(p.numel() * 4 for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    assert h100["weight_bytes"] == weights
    assert h100["max_context_tokens"] == (80 * 2**30 - weights) // h100["kv_bytes_per_token"]
    assert {"ascend-910b", "cpu", "biren-br104"} <= set(rows)


@pytest.mark.slow
def test_verify_lm_cpu_tokens_identical_and_logits_within_fp32(llama_dir, capsys):
    assert main(["verify-lm", str(llama_dir), "--max-new-tokens", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["execution"] == "executed" and report["precision"] == "fp32"
    assert report["tokens_equal"] and report["first_divergence"] is None
    assert report["tokens"] == hf_greedy(tiny_lm("llama"), PROMPTS, 4)[:, 6:].tolist()
    assert len(report["steps"]) == 4
    assert report["memory"]["target"] == "cpu" and report["memory"]["batch"] == 2
    assert report["memory"]["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4
    assert all(s["rule"] == "table" and s["max_abs"] < 1e-4 and s["topk_overlap"] == 1.0
               for s in report["steps"])
