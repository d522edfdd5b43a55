"""Single-process ``llamafactory-cli train`` runs where the fused head must equal the unfused
one (``dft_fused: false``) step by step: LoRA with evaluation, bf16 mixed precision, a
soft-capped Gemma2, a mixture-of-experts model with its router loss, packed datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dft_mm.demo.synthetic import text_problems, write_text_training_set
from dft_mm.demo.tiny import build_tiny_text
from helpers import run_llamafactory_train, train_config

pytestmark = pytest.mark.e2e

REL = 1e-5
DFT = {"sft_loss": "dft"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("variants_data")
    write_text_training_set(text_problems(16, seed=0), out)
    return out


def _run(model: Path, data: Path, out: Path, keys: dict, env: dict | None = None, **extra):
    config = train_config(model, data, "synthetic_code", out, **{"template": "empty", "per_device_train_batch_size": 4,
                                                                  **keys, **extra})
    proc, history = run_llamafactory_train(config, out, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(history) == config["max_steps"], history
    state = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return history, [entry for entry in state if "eval_loss" in entry], proc.stdout + proc.stderr


def _pair(model, data, tmp_path, keys, **extra):
    """The same run with the fused head and with ``dft_fused: false``."""
    fused = _run(model, data, tmp_path / "fused", keys, **extra)
    unfused = _run(model, data, tmp_path / "unfused", {**keys, "dft_fused": False}, **extra)
    return fused, unfused


def _assert_same_steps(got, want, keys=("loss", "nll", "grad_norm")):
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want), start=1):
        for key in keys:
            assert g[key] == pytest.approx(w[key], rel=REL), (step, key, g[key], w[key])


def test_lora_with_a_fused_evaluation_loss(tiny_text_model, data, tmp_path):
    eval_keys = {"val_size": 4, "eval_strategy": "steps", "eval_steps": 2, "per_device_eval_batch_size": 2}
    lora = {"finetuning_type": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_target": "all"}
    (fused, fused_eval, log), (unfused, unfused_eval, _) = _pair(tiny_text_model, data, tmp_path, {**DFT, **lora}, **eval_keys)
    _assert_same_steps(fused, unfused)
    assert "dft_mm: evaluation loss through the fused head" in log
    assert len(fused_eval) == len(unfused_eval) == 1
    assert fused_eval[0]["eval_loss"] == pytest.approx(unfused_eval[0]["eval_loss"], rel=REL)


def test_bf16_mixed_precision(tiny_text_model, data, tmp_path):
    """Full fine-tuning with bf16: fp32 master weights, autocast bf16 GEMMs."""
    (fused, _, _), (unfused, _, _) = _pair(tiny_text_model, data, tmp_path, DFT, bf16=True, use_cpu=True)
    _assert_same_steps(fused, unfused)


def test_softcapped_gemma2(data, tmp_path):
    """Gemma2's final_logit_softcapping is replayed inside the fused head (it was ignored: 0.0085
    fused vs 0.0699 unfused)."""
    model = build_tiny_text(tmp_path / "gemma2", family="gemma2")
    (fused, _, log), (unfused, _, _) = _pair(model, data, tmp_path, {**DFT, "dft_level": "geomean"})
    assert "replaying the model's logit map (softcap 2)" in log
    _assert_same_steps(fused, unfused)


def test_mixture_of_experts_keeps_the_router_loss(data, tmp_path):
    model = build_tiny_text(tmp_path / "moe", family="qwen2_moe")
    moe = {"moe_aux_loss_coef": 0.01}
    alone, _, _ = _run(model, data, tmp_path / "alone", moe, env={"DFT_MM_DISABLE": "1"})
    nll, _, _ = _run(model, data, tmp_path / "nll", {"sft_loss": "nll", **moe})
    _assert_same_steps(nll, alone, keys=("loss", "grad_norm"))  # the model's own loss includes the router loss
    assert nll[0]["loss"] > nll[0]["nll"] * (1 + 1e-4)  # ... which the plain NLL does not
    (fused, _, _), (unfused, _, _) = _pair(model, data, tmp_path / "dft", {**DFT, **moe})
    _assert_same_steps(fused, unfused)


@pytest.mark.parametrize(
    "packing, level",
    [({"neat_packing": True}, "sentence"), ({"packing": True}, "geomean")],
    ids=["neat_packing-sentence", "packing-geomean"],
)
def test_packed_rows_get_one_weight_per_sample(tiny_text_model, data, tmp_path, packing, level):
    keys = {**DFT, "dft_level": level, "dft_alpha": 0.5, **packing}
    (fused, _, log), (unfused, _, _) = _pair(tiny_text_model, data, tmp_path, keys, per_device_train_batch_size=1, cutoff_len=96)
    kind = "neat" if "neat_packing" in packing else "packing"
    assert f"one weight per packed sample ({kind})" in log
    _assert_same_steps(fused, unfused)
