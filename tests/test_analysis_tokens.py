"""`dft-mm analyze tokens` on hand-made models whose target probabilities are known exactly.

The tiny Qwen2 is rewired so every position predicts the same distribution ``q``: all
attention / MLP outputs are zeroed (the residual stream is the embedding), every token embeds
to the same vector, and the LM head maps it to ``log q``. LLaMA-Factory's ``qwen`` template
supervises ``response + "<|im_end|>\\n"``, so the expected histogram follows from the
responses alone, without running any of the code under test.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from dft_mm.analysis.token_probs import analyze_tokens
from dft_mm.cli import main

RESPONSES = ["2 + 3 = 5", "the answer is 3", "red green blue"]


def _hand_made(tiny: Path, out: Path, token_probs: dict[str, float]) -> tuple[Path, dict[int, float]]:
    """Copy of the tiny model predicting ``q`` everywhere; returns (dir, {token_id: q})."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    model = Qwen2ForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    vocab = model.config.vocab_size
    named = {tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))[0]: p for text, p in token_probs.items()}
    rest = (1.0 - sum(named.values())) / (vocab - len(named))
    q = torch.full((vocab,), rest, dtype=torch.float64)
    for token_id, p in named.items():
        q[token_id] = p
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        hidden = torch.zeros(model.config.hidden_size)
        hidden[0] = 1.0
        model.model.embed_tokens.weight.copy_(hidden.expand_as(model.model.embed_tokens.weight))
        scale = model.model.norm(hidden[None, None])[0, 0, 0].item()  # what RMSNorm makes of dim 0
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = (q.log() / scale).float()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    shutil.copy(tiny / "generation_config.json", out / "generation_config.json")
    return out, {i: float(q[i]) for i in range(vocab)}


def _expected(tokenizer_dir: Path, q: dict[int, float], bins: int = 10) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids = [i for text in RESPONSES for i in tokenizer.encode(text + "<|im_end|>\n", add_special_tokens=False)]
    probs = [q[i] for i in ids]
    counts = [0] * bins
    for p in probs:
        counts[min(int(p * bins), bins - 1)] += 1
    return {"num_tokens": len(ids), "counts": counts, "mean": sum(probs) / len(probs),
            "mean_log_prob": sum(math.log(p) for p in probs) / len(probs),
            "share_below_0.1": sum(p < 0.1 for p in probs) / len(probs),
            "share_above_0.9": sum(p > 0.9 for p in probs) / len(probs),
            "lowest": Counter(i for i, p in zip(ids, probs) if p < 1 / bins)}


@pytest.fixture(scope="module")
def hand_made(tiny_text_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("hand_made")
    a = _hand_made(tiny_text_model, root / "a", {"<|im_end|>": 0.55, "\n": 0.25, " =": 0.15})
    b = _hand_made(tiny_text_model, root / "b", {"<|im_end|>": 0.95, " 3": 0.03})
    data = root / "data.json"
    rows = [{"instruction": f"question {i}: count the shapes", "input": "", "output": text} for i, text in enumerate(RESPONSES)]
    data.write_text(json.dumps(rows))
    return a, b, data


def test_histograms_match_known_probabilities_and_prompt_tokens_are_masked(hand_made, tmp_path):
    (dir_a, q_a), (dir_b, q_b), data = hand_made
    out = tmp_path / "out"
    payload = analyze_tokens([f"A={dir_a}", f"B={dir_b}"], str(data), "qwen", str(out), batch_size=2)
    assert list(payload["models"]) == ["A", "B"]
    for name, directory, q in (("A", dir_a, q_a), ("B", dir_b, q_b)):
        stats, expected = payload["models"][name], _expected(directory, q)
        assert stats["num_samples"] == 3 and stats["num_samples_dropped_by_llamafactory"] == 0
        assert stats["num_tokens"] == expected["num_tokens"]  # prompt masked exactly as in training
        assert stats["counts"] == expected["counts"]
        assert stats["mean"] == pytest.approx(expected["mean"], rel=1e-5)
        assert stats["mean_log_prob"] == pytest.approx(expected["mean_log_prob"], rel=1e-5)
        assert stats["share_below_0.1"] == pytest.approx(expected["share_below_0.1"])
        assert stats["share_above_0.9"] == pytest.approx(expected["share_above_0.9"])
        lowest = {item["token_id"]: item["count"] for item in stats["lowest_bin_tokens"]}
        assert lowest == dict(expected["lowest"].most_common(20))
    assert payload["models"]["B"]["share_above_0.9"] > 0 and payload["models"]["A"]["counts"][5] > 0
    on_disk = json.loads((out / "token_probs.json").read_text())
    assert on_disk["models"]["A"]["counts"] == payload["models"]["A"]["counts"]
    assert (out / "token_probs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "lowest_tokens.md").read_text()
    assert "## A" in markdown and "## B" in markdown and '`"red"`' in markdown


def test_rerun_skips_finished_models_and_refuses_other_settings(hand_made, tmp_path):
    (dir_a, _), _, data = hand_made
    out = tmp_path / "out"
    first = analyze_tokens([f"A={dir_a}"], str(data), "qwen", str(out), max_samples=2)
    moved = dir_a.with_name("a_moved")
    dir_a.rename(moved)  # a rerun that tried to load the model would now fail
    try:
        again = analyze_tokens([f"A={dir_a}"], str(data), "qwen", str(out), max_samples=2)
        assert again["models"]["A"] == first["models"]["A"]
        assert main(["analyze", "tokens", "--model", f"A={dir_a}", "--data", str(data), "--template", "qwen",
                     "--out", str(out), "--max-samples", "3"]) == 2  # other settings: a clear error, no overwrite
        assert json.loads((out / "token_probs.json").read_text())["settings"]["max_samples"] == 2
    finally:
        moved.rename(dir_a)


def test_bad_arguments_are_user_errors(tmp_path, capsys):
    assert main(["analyze", "tokens", "--model", "nodir", "--data", "x.json", "--template", "qwen",
                 "--out", str(tmp_path)]) == 2
    assert "expected NAME=DIR" in capsys.readouterr().err
    assert main(["analyze", "tokens", "--model", f"m={tmp_path}", "--data", str(tmp_path / "missing.json"),
                 "--template", "qwen", "--out", str(tmp_path)]) == 2
    assert "--dataset-dir" in capsys.readouterr().err
    assert main(["analyze", "tokens", "--model", f"m={tmp_path}", "--data", "x", "--template", "qwen",
                 "--out", str(tmp_path), "--bins", "7"]) == 2
    assert "--bins 7" in capsys.readouterr().err


def test_lora_output_dir_is_analysed_with_its_adapter(tiny_text_model, hand_made, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    _, _, data = hand_made
    torch.manual_seed(0)
    peft_model = get_peft_model(Qwen2ForCausalLM.from_pretrained(str(tiny_text_model)),
                                LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(str(tmp_path / "lora"))  # adapter_config.json names the base model dir
    peft_model.merge_and_unload().save_pretrained(str(tmp_path / "merged"))
    AutoTokenizer.from_pretrained(str(tiny_text_model)).save_pretrained(str(tmp_path / "merged"))
    models = analyze_tokens([f"base={tiny_text_model}", f"lora={tmp_path / 'lora'}", f"merged={tmp_path / 'merged'}"],
                            str(data), "qwen", str(tmp_path / "out"))["models"]
    assert models["lora"]["mean_log_prob"] == pytest.approx(models["merged"]["mean_log_prob"], rel=1e-5)
    assert models["lora"]["mean_log_prob"] != pytest.approx(models["base"]["mean_log_prob"], rel=1e-5)


def test_recipe_supplies_dataset_template_and_data_keys(hand_made, tmp_path):
    (dir_a, q_a), _, data = hand_made
    (tmp_path / "dataset_info.json").write_text(json.dumps({"shapes": {"file_name": str(data)}}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model_name_or_path: x\nstage: sft\ndataset: shapes\ndataset_dir: {tmp_path}\n"
                      "template: qwen\ncutoff_len: 512\ntrain_on_prompt: true\nlearning_rate: 5.0e-5\n")
    masked = analyze_tokens([f"A={dir_a}"], str(data), "qwen", str(tmp_path / "masked"))["models"]["A"]
    payload = analyze_tokens([f"A={dir_a}"], None, None, str(tmp_path / "recipe"), recipe=str(recipe))
    settings, stats = payload["settings"], payload["models"]["A"]
    assert (settings["data"], settings["template"], settings["cutoff_len"]) == ("shapes", "qwen", 512)
    assert settings["extra_args"] == {"train_on_prompt": True}  # training-only keys are not taken
    assert stats["num_tokens"] > masked["num_tokens"] == _expected(dir_a, q_a)["num_tokens"]


def test_neat_packing_scores_like_unpacked_samples(tiny_text_model, hand_made, tmp_path):
    _, _, data = hand_made

    def run(*settings):
        out = tmp_path / ("_".join(settings) or "plain")
        return analyze_tokens([f"m={tiny_text_model}"], str(data), "qwen", str(out), set_args=list(settings))["models"]["m"]

    plain, neat = run(), run("packing=true", "neat_packing=true")
    assert neat["num_samples"] < plain["num_samples"] and neat["num_tokens"] == plain["num_tokens"]
    assert neat["mean_log_prob"] == pytest.approx(plain["mean_log_prob"], rel=1e-5)  # block-diagonal attention
