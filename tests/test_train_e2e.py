"""The real ``llamafactory-cli train`` with the dft_mm keys, tiny text and VL models, on CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dft_mm.demo.synthetic import vl_problems, write_vl_training_set
from helpers import run_llamafactory_train, train_config

pytestmark = pytest.mark.e2e

LOSS_KEYS = {
    "nll": {"sft_loss": "nll"},
    "token": {"sft_loss": "dft"},
    "sentence": {"sft_loss": "dft", "dft_level": "sentence"},
    "geomean": {"sft_loss": "dft", "dft_level": "geomean", "dft_alpha": 0.5},
    # dft_fused defaults to auto (the fused lm_head+loss); this one computes from full logits
    "token_unfused": {"sft_loss": "dft", "dft_fused": False},
}


@pytest.fixture(scope="module")
def vl_data_uneven(tmp_path_factory) -> Path:
    """4 VL samples whose first micro-batch (of 2) has many more target tokens than the second."""
    out = tmp_path_factory.mktemp("vl_data_uneven")
    path = write_vl_training_set(vl_problems(4, seed=0, image_dir=out / "images"), out)
    rows = json.loads(path.read_text())
    rows[0]["messages"][-1]["content"] += " It is the only shape, centred on a white background." * 3
    path.write_text(json.dumps(rows))
    return out


def _train_each_loss(model, data, dataset, tmp_path, **extra):
    histories = {}
    for name, keys in LOSS_KEYS.items():
        config = train_config(model, data, dataset, tmp_path / name, **extra, **keys)
        proc, history = run_llamafactory_train(config, tmp_path / name)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(history) == 2, history
        for entry in history:
            for key in ("loss", "nll", "mean_target_prob"):
                assert math.isfinite(entry[key]), (name, entry)
            assert 0 < entry["mean_target_prob"] < 1
        histories[name] = history
    return histories


def _check_losses(histories):
    first = {name: h[0] for name, h in histories.items()}
    # Same initial model and data: the plain NLL of step 1 is identical whatever the objective.
    for name in LOSS_KEYS:
        assert first[name]["nll"] == pytest.approx(first["nll"]["nll"], rel=1e-4), name
    # SFT optimises the NLL itself; every DFT variant optimises something else.
    assert first["nll"]["loss"] == pytest.approx(first["nll"]["nll"], rel=1e-4)
    for name in ("token", "sentence", "geomean"):
        assert first[name]["loss"] < first["nll"]["loss"] * 0.5, (name, first[name])
    # The fused head follows the same loss curve as the loss computed from materialised logits.
    for fused, unfused in zip(histories["token"], histories["token_unfused"]):
        for key in ("loss", "nll", "mean_target_prob", "grad_norm"):
            assert fused[key] == pytest.approx(unfused[key], rel=1e-4), key


def test_text_model_every_level(tiny_text_model, text_data, tmp_path):
    _check_losses(_train_each_loss(tiny_text_model, text_data, "synthetic_code", tmp_path, template="empty"))


def test_vl_model_every_level(tiny_vl_model, vl_data, tmp_path):
    histories = _train_each_loss(
        tiny_vl_model, vl_data, "synthetic_colours", tmp_path, template="qwen2_vl",
        image_max_pixels=56 * 56, freeze_vision_tower=True,
    )
    _check_losses(histories)


@pytest.mark.parametrize(
    "modality, loss_keys",
    [
        ("text", {"sft_loss": "dft", "dft_level": "sentence", "dft_alpha": 0.5}),  # per-sequence weights
        # SFT on a VLM: upstream averages per micro-batch here; dft_mm normalises by all tokens of the step
        ("vl", {"sft_loss": "nll"}),
    ],
)
def test_gradient_accumulation_matches_a_larger_batch(
    modality, loss_keys, tiny_text_model, tiny_vl_model, text_data, vl_data_uneven, tmp_path
):
    """Batch 4 in one step == 2 x 2 accumulated: same loss, gradient norm and metrics."""
    if modality == "text":
        model, data, dataset, extra = tiny_text_model, text_data, "synthetic_code", {"template": "empty"}
    else:
        model, data, dataset = tiny_vl_model, vl_data_uneven, "synthetic_colours"
        extra = {"template": "qwen2_vl", "image_max_pixels": 56 * 56}
    results = []
    for batch, accumulation in ((4, 1), (2, 2)):
        config = train_config(
            model, data, dataset, tmp_path / f"b{batch}", per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation, max_steps=1, **extra, **loss_keys,
        )
        proc, history = run_llamafactory_train(config, tmp_path / f"b{batch}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(history[0])
    one, accumulated = results
    for key in ("loss", "grad_norm", "nll", "mean_target_prob"):
        assert accumulated[key] == pytest.approx(one[key], rel=1e-4), key


def test_upstream_use_dft_loss_is_served_by_dft_mm(tiny_text_model, text_data, tmp_path):
    config = train_config(tiny_text_model, text_data, "synthetic_code", tmp_path, template="empty", use_dft_loss=True)
    proc, history = run_llamafactory_train(config, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dft_mm: sft_loss=dft level=token" in proc.stdout + proc.stderr
    assert "mean_target_prob" in history[0]


def test_dft_mm_train_command(tiny_text_model, text_data, tmp_path):
    """`dft-mm train cfg.yaml key=value`: overrides apply, the patch is on even with DFT_MM_DISABLE=1
    in the shell, and the environment's llamafactory-cli is found without PATH."""
    import os
    import subprocess
    import sys

    import yaml

    config = train_config(tiny_text_model, text_data, "synthetic_code", tmp_path / "out", template="empty")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "DFT_MM_DISABLE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "dft_mm", "train", str(tmp_path / "cfg.yaml"), "sft_loss=dft", "dft_level=geomean"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dft_mm: sft_loss=dft level=geomean" in proc.stdout + proc.stderr
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    assert any("mean_target_prob" in entry for entry in history)
