"""ASFT, EAFT and the weight floor through the real ``llamafactory-cli train`` (tiny text and VL
models, CPU), side by side with LLaMA-Factory's own ``use_asft_loss`` / ``use_eaft_loss`` /
``use_dft_loss`` (run with ``DFT_MM_DISABLE=1``), step by step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dft_mm.demo.synthetic import text_problems, write_text_training_set
from helpers import run_llamafactory_train, train_config

pytestmark = pytest.mark.e2e

REL = 1e-5
UPSTREAM = {"DFT_MM_DISABLE": "1"}
VL = {"template": "qwen2_vl", "image_max_pixels": 56 * 56, "freeze_vision_tower": True}


def _train(model, data, dataset, out: Path, *, env=None, expect_ok=True, **keys):
    config = train_config(model, data, dataset, out, **keys)
    proc, history = run_llamafactory_train(config, out, env=env)
    if expect_ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return history, proc.stdout + proc.stderr


def _text(tiny_text_model, text_data, out, **keys):
    return _train(tiny_text_model, text_data, "synthetic_code", out, template="empty", **keys)


def _same(got, want, keys=("loss", "grad_norm"), rel=REL):
    assert len(got) == len(want) > 0
    for step, (g, w) in enumerate(zip(got, want), start=1):
        for key in keys:
            assert g[key] == pytest.approx(w[key], rel=rel), (step, key, g[key], w[key])


@pytest.mark.parametrize("objective, keys", [("asft", {"asft_alpha": 0.5}), ("eaft", {"eaft_alpha": 1.0})])
def test_text_objective_equals_llamafactorys_own_step_by_step(objective, keys, tiny_text_model, text_data, tmp_path):
    """One micro-batch per step, where upstream's normalisation agrees: loss and grad_norm to 1e-5
    (ASFT: at step 1; 5e-5 after it, see below)."""
    steps = {"max_steps": 3, **keys}
    upstream, up_log = _text(tiny_text_model, text_data, tmp_path / "upstream", env=UPSTREAM,
                             **{f"use_{objective}_loss": True}, **steps)
    assert "dft_mm" not in up_log
    served, log = _text(tiny_text_model, text_data, tmp_path / "served", **{f"use_{objective}_loss": True}, **steps)
    assert f"dft_mm: sft_loss={objective}" in log and f"use_{objective}_loss: true served by dft_mm" in log
    assert "fused lm_head+loss" in log
    unfused, _ = _text(tiny_text_model, text_data, tmp_path / "unfused", sft_loss=objective, dft_fused=False, **steps)
    worst = {key: max(abs(g[key] - w[key]) / abs(w[key]) for g, w in zip(served, upstream)) for key in ("loss", "grad_norm")}
    print(f"\n{objective} vs LLaMA-Factory's use_{objective}_loss, {len(served)} steps: largest relative difference "
          + ", ".join(f"{key} {value:.2g}" for key, value in worst.items())
          + (f"; step-1 kl {served[0]['kl']:.2g}" if objective == "asft" else ""))
    if objective == "eaft":
        _same(served, upstream)
    else:
        # ASFT: step 1 (reference = policy) to 1e-5; after it, ours and upstream's differ by up to
        # 1.6e-5 in grad_norm (step 2). Our plain-torch ASFT from full logits (`unfused`) shows the
        # same difference, and the fused head equals it to 1e-5: it lies in the two formulations
        # of the KL (ours: log-softmax on both sides, gradient p - q), not in the fused head.
        _same(served[:1], upstream[:1])
        _same(served, upstream, rel=5e-5)
    _same(served, unfused, keys=("loss", "grad_norm", "nll", "mean_target_prob", "entropy"))
    assert all(0 < entry["entropy"] for entry in served)
    if objective == "asft":
        assert abs(served[0]["kl"]) < 1e-6  # step 0: the reference is the policy
        # on text, LLaMA-Factory's reference sees what the policy sees: its step-1 KL is 0 too
        upstream_dft, _ = _text(tiny_text_model, text_data, tmp_path / "upstream_dft", env=UPSTREAM, use_dft_loss=True,
                                max_steps=1)
        upstream_kl = (upstream[0]["loss"] - upstream_dft[0]["loss"]) / keys["asft_alpha"]
        print(f"text step 1: dft_mm kl {served[0]['kl']:.2g}, LLaMA-Factory's kl {upstream_kl:.2g}")
        assert abs(upstream_kl) < 1e-6
        assert served[-1]["kl"] > 1e-4  # then the policy moves away from it
        assert served[-1]["kl"] == pytest.approx(unfused[-1]["kl"], rel=1e-3)
    else:
        assert "kl" not in served[0]


def test_vl_reference_sees_the_image(tiny_vl_model, vl_data, tmp_path):
    """Qwen2.5-VL, asft_alpha 1, one micro-batch, first step, where reference and policy are the
    same weights: dft_mm's KL is 0 and ASFT is DFT; LLaMA-Factory's reference never sees the image,
    so its KL is not 0 and its gradient is several times DFT's."""
    one_step = {"max_steps": 1, "per_device_train_batch_size": 4, **VL}
    run = lambda name, env=None, **keys: _train(tiny_vl_model, vl_data, "synthetic_colours", tmp_path / name,  # noqa: E731
                                                env=env, **one_step, **keys)[0][0]
    ours, ours_dft = run("asft", sft_loss="asft", asft_alpha=1.0), run("dft", sft_loss="dft")
    upstream, upstream_dft = (run("up_asft", UPSTREAM, use_asft_loss=True, asft_alpha=1.0),
                              run("up_dft", UPSTREAM, use_dft_loss=True))
    print(f"\nVL step 1, asft_alpha 1: dft_mm kl {ours['kl']:.3g}, loss {ours['loss']:.6g} (its DFT {ours_dft['loss']:.6g}), "
          f"grad_norm {ours['grad_norm']:.4g} (its DFT {ours_dft['grad_norm']:.4g}); LLaMA-Factory loss "
          f"{upstream['loss']:.6g} (its DFT {upstream_dft['loss']:.6g}: kl {upstream['loss'] - upstream_dft['loss']:.3g}), "
          f"grad_norm {upstream['grad_norm']:.4g} (its DFT {upstream_dft['grad_norm']:.4g})")
    assert abs(ours["kl"]) < 1e-6
    assert ours["loss"] == pytest.approx(ours_dft["loss"], rel=1e-6)
    assert ours["grad_norm"] == pytest.approx(ours_dft["grad_norm"], rel=1e-5)
    assert ours_dft["loss"] == pytest.approx(upstream_dft["loss"], rel=1e-5)  # the same DFT on both sides
    upstream_kl = upstream["loss"] - upstream_dft["loss"]  # asft_alpha = 1: the KL term itself
    assert upstream_kl > 1e-5, (upstream, upstream_dft)
    assert upstream["grad_norm"] > 2 * upstream_dft["grad_norm"], (upstream, upstream_dft)


@pytest.mark.parametrize("keys", [{"sft_loss": "asft", "asft_alpha": 0.5}, {"sft_loss": "eaft"}], ids=["asft", "eaft"])
def test_gradient_accumulation_matches_a_larger_batch(keys, tiny_text_model, text_data, tmp_path):
    """Batch 4 in one step == 2 x 2 accumulated, token-normalised over the step: same loss,
    gradient norm and metrics, at step 2 too (where ASFT's KL is no longer 0)."""
    results = []
    for batch, accumulation in ((4, 1), (2, 2)):
        history, _ = _text(tiny_text_model, text_data, tmp_path / f"b{batch}", per_device_train_batch_size=batch,
                           gradient_accumulation_steps=accumulation, max_steps=2, **keys)
        results.append(history)
    metrics = ("loss", "grad_norm", "nll", "mean_target_prob", "entropy") + (("kl",) if keys["sft_loss"] == "asft" else ())
    _same(results[1], results[0], keys=metrics, rel=1e-4)


def test_lora_reference_is_the_base_model_with_adapters_disabled(tiny_text_model, text_data, tmp_path):
    """No second copy of the model: the reference is the policy with its LoRA adapters off;
    evaluation computes ASFT's loss too. LLaMA-Factory alone builds no reference under LoRA and
    fails on the first step."""
    lora = {"finetuning_type": "lora", "lora_rank": 4, "lora_target": "all", "max_steps": 3, "learning_rate": 5e-3,
            "sft_loss": "asft", "asft_alpha": 0.5}
    evaluation = {"val_size": 0.25, "eval_strategy": "steps", "eval_steps": 3, "per_device_eval_batch_size": 2}
    fused, log = _text(tiny_text_model, text_data, tmp_path / "fused", **lora, **evaluation)
    assert "reference: the base model (LoRA adapters disabled, no second copy)" in log
    assert "Created reference model" not in log
    unfused, _ = _text(tiny_text_model, text_data, tmp_path / "unfused", **lora, **evaluation, dft_fused=False)
    assert abs(fused[0]["kl"]) < 1e-6 and fused[-1]["kl"] > 0
    _same(fused, unfused, keys=("loss", "grad_norm", "nll"), rel=1e-4)
    # the KL measures the small LoRA update itself; Adam's first step amplifies rounding in near-zero gradients
    _same(fused, unfused, keys=("kl",), rel=1e-2)
    eval_losses = [[entry["eval_loss"] for entry in json.loads((tmp_path / run / "trainer_state.json").read_text())[
        "log_history"] if "eval_loss" in entry] for run in ("fused", "unfused")]
    assert eval_losses[0] and eval_losses[0] == pytest.approx(eval_losses[1], rel=1e-5)  # the fused head with its reference
    upstream_keys = {key: value for key, value in lora.items() if key not in ("sft_loss",)}
    _, upstream_log = _text(tiny_text_model, text_data, tmp_path / "upstream", env=UPSTREAM, expect_ok=False,
                            use_asft_loss=True, **upstream_keys)
    assert "'NoneType' object is not callable" in upstream_log


def test_sentence_weights_underflow_is_logged_and_the_floor_keeps_training(tiny_text_model, tmp_path):
    """On a random-init model (p ~ 1e-3) prod p of a ~90-token answer is exactly 0 in fp32: those
    sequences train with no gradient; the run says so once and logs weight_underflow. A floor
    trains them at the floor's weight."""
    data = tmp_path / "long"
    write_text_training_set([{**p, "completion": p["completion"] * 8} for p in text_problems(8, seed=0)], data)
    keys = {"sft_loss": "dft", "dft_level": "sentence", "cutoff_len": 256}
    plain, log = _text(tiny_text_model, data, tmp_path / "plain", **keys)
    assert [entry["weight_underflow"] for entry in plain] == [1.0, 1.0]
    assert plain[0]["loss"] == 0.0 and plain[0]["grad_norm"] == 0.0
    assert log.count("sentence-level weight of exactly 0") == 1
    floored, _ = _text(tiny_text_model, data, tmp_path / "floor", dft_min_weight=0.1, **keys)
    assert floored[0]["weight_underflow"] == 1.0  # the raw weight still underflows ...
    assert floored[0]["loss"] == pytest.approx(0.1 * floored[0]["nll"], rel=1e-5)  # ... and trains at the floor
    assert floored[0]["grad_norm"] > 0
