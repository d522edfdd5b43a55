"""`analyze tokens` on VL data: sharegpt with images, template qwen2_vl, through LLaMA-Factory's
mm_plugin, processor and mrope collator, checked against the model's own HF loss."""

from __future__ import annotations

import json

import pytest
import torch

from dft_mm.analysis.dataset_spec import resolve_dataset
from dft_mm.analysis.lf_pipeline import load_sft_pipeline
from dft_mm.analysis.token_probs import analyze_tokens

ANSWERS = ["there are 3 red circle", "2 blue square"]


@pytest.fixture(scope="module")
def vl_data(tmp_path_factory):
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("vl_data")
    rows = []
    for i, answer in enumerate(ANSWERS):
        image = Image.new("RGB", (56, 56), "white")
        ImageDraw.Draw(image).ellipse((8 + i * 4, 8, 40, 40), fill="red" if i == 0 else "blue")
        image.save(root / f"img{i}.png")
        rows.append({"messages": [{"role": "user", "content": "<image>how many shapes are there?"},
                                  {"role": "assistant", "content": answer}],
                     "images": [f"img{i}.png"]})  # relative to the data file, as converters write it
    data = root / "vl.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return data


def test_vl_targets_are_the_answers_and_match_the_models_own_loss(tiny_vl_model, vl_data, tmp_path):
    from transformers import AutoTokenizer

    payload = analyze_tokens([f"vl={tiny_vl_model}"], str(vl_data), "qwen2_vl", str(tmp_path / "out"), batch_size=2)
    stats = payload["models"]["vl"]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_vl_model))
    expected = [i for a in ANSWERS for i in tokenizer.encode(a + "<|im_end|>\n", add_special_tokens=False)]
    assert stats["num_samples"] == 2 and stats["num_tokens"] == len(expected)
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert image_pad not in {item["token_id"] for item in stats["lowest_bin_tokens"]}

    # Independent of our position selection: HF's own mean NLL on the same collated batch.
    spec = resolve_dataset(str(vl_data), None, tmp_path / "spec")
    pipeline = load_sft_pipeline(str(tiny_vl_model), spec, "qwen2_vl", tmp_path / "scratch")
    batch = pipeline.collator([pipeline.dataset[i] for i in range(len(pipeline.dataset))])
    assert batch["pixel_values"].numel() > 0 and batch["position_ids"].dim() == 3  # images + mrope reached the model
    with torch.no_grad():
        loss = pipeline.model(**batch).loss.item()
    assert stats["mean_log_prob"] == pytest.approx(-loss, rel=1e-4)
