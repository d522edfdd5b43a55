"""The support matrix: the real ``llamafactory-cli train`` under every engine users scale on.

Each distributed case is a 2-process run (torchrun, gloo, CPU; DeepSpeed's CPU accelerator)
with 2 rows per rank, compared step by step with a single-process run of the same 4-row
batches: ``loss``, ``nll`` and ``grad_norm`` must agree to 1e-5 relative. References are the
unfused DFT head (``dft_fused: false``) and LLaMA-Factory alone (``DFT_MM_DISABLE=1``).
FSDP goes through torch directly (accelerate's FSDP plugin refuses CPU):
``fixtures/engines/fsdp_step.py``. docs/support-matrix.md lists which test proves which cell.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import OFFLINE_ENV, REPO
from dft_mm.demo.synthetic import text_problems, vl_problems, write_text_training_set, write_vl_training_set
from dft_mm.demo.tiny import build_tiny_text
from helpers import BIN, EXIT_ABORT, aborted_after_finishing, run_llamafactory_train, train_config

pytestmark = pytest.mark.e2e

STEPS = 2
REL = 1e-5
DFT = {"sft_loss": "dft"}
ZERO3 = REPO / "data_configs" / "ds_z3_config.json"


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _zero2_config(tmp: Path) -> Path:
    config = json.loads(ZERO3.read_text())
    config["zero_optimization"] = {"stage": 2, "overlap_comm": False, "contiguous_gradients": True,
                                   "reduce_bucket_size": "auto", "allgather_bucket_size": 5e8}
    path = tmp / "ds_z2_config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_text_model):
    root = tmp_path_factory.mktemp("engines")
    data = root / "data"
    write_text_training_set(text_problems(16, seed=0), data)
    return {
        "root": root, "data": data, "untied": tiny_text_model,
        "tied": build_tiny_text(root / "tied", tie_word_embeddings=True),
        "engines": {
            "ddp": {"ddp_backend": "gloo"},
            # the HF default for full fine-tuning without gradient checkpointing
            "ddp_find_unused": {"ddp_backend": "gloo", "ddp_find_unused_parameters": True,
                                "disable_gradient_checkpointing": True},
            "zero2": {"ddp_backend": "gloo", "deepspeed": str(_zero2_config(root))},
            "zero3": {"ddp_backend": "gloo", "deepspeed": str(ZERO3)},
        },
    }


def _run(setup, name: str, model: Path, keys: dict, *, engine: str | None = None, env: dict | None = None,
         data: Path | None = None, dataset: str = "synthetic_code", **extra) -> tuple[list[dict], str]:
    """Train STEPS steps; single process with batch 4, or 2 processes x batch 2 under ``engine``."""
    out = setup["root"] / name
    overrides = {"template": "empty", "max_steps": STEPS, **keys, **extra}
    env = dict(env or {})
    if engine is None:
        overrides["per_device_train_batch_size"] = 4
    else:
        overrides.update(setup["engines"][engine], per_device_train_batch_size=2)
        env.update(FORCE_TORCHRUN="1", NPROC_PER_NODE="2", MASTER_PORT=_free_port())
    config = train_config(model, data or setup["data"], dataset, out, **overrides)
    proc, history = run_llamafactory_train(config, out, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(history) == STEPS, history
    return history, proc.stdout + proc.stderr


def test_only_an_exit_abort_after_a_finished_training_is_run_again(tmp_path):
    """The rerun in ``run_llamafactory_train`` is for exactly one failure: a rank's SIGABRT at
    interpreter exit after this run wrote its final state. Anything else fails the test at once."""
    state = tmp_path / "trainer_state.json"
    abort = f"{EXIT_ABORT}\n  exitcode  : -6 (pid: 8550)  (SIGABRT)\n"
    failed = subprocess.CompletedProcess([], 1, "", abort)
    started = time.time()
    assert not aborted_after_finishing(failed, state, started)  # no state written
    state.write_text(json.dumps({"log_history": [{"loss": 6.9, "step": 1}]}))
    assert not aborted_after_finishing(failed, state, started)  # training did not finish
    state.write_text(json.dumps({"log_history": [{"loss": 6.9, "step": 1}, {"train_runtime": 1.5}]}))
    assert aborted_after_finishing(failed, state, started)
    assert not aborted_after_finishing(failed, state, time.time() + 60)  # a state from before the run
    assert not aborted_after_finishing(subprocess.CompletedProcess([], 1, "", "Traceback: ValueError"), state, started)
    assert not aborted_after_finishing(subprocess.CompletedProcess([], 0, "", abort), state, started)


def _assert_same_steps(got: list[dict], want: list[dict], keys=("loss", "nll", "grad_norm")) -> None:
    for step, (g, w) in enumerate(zip(got, want), start=1):
        for key in keys:
            assert g[key] == pytest.approx(w[key], rel=REL), (step, key, g[key], w[key])


@pytest.fixture(scope="module")
def references(setup):
    """Single-process runs: the unfused DFT head (untied and tied) and LLaMA-Factory alone."""
    return {
        "dft": _run(setup, "ref_dft", setup["untied"], {**DFT, "dft_fused": False})[0],
        "dft_tied": _run(setup, "ref_dft_tied", setup["tied"], {**DFT, "dft_fused": False})[0],
        "llamafactory": _run(setup, "ref_lf", setup["untied"], {}, env={"DFT_MM_DISABLE": "1"})[0],
    }


@pytest.mark.parametrize("engine", ["ddp", "ddp_find_unused", "zero2", "zero3"])
def test_fused_dft_under_each_engine_equals_the_unfused_head(setup, references, engine):
    history, log = _run(setup, f"{engine}_dft", setup["untied"], DFT, engine=engine)
    assert "fused lm_head+loss" in log
    _assert_same_steps(history, references["dft"])


def test_fused_dft_with_tied_embeddings_under_zero3(setup, references):
    history, _ = _run(setup, "zero3_tied", setup["tied"], DFT, engine="zero3")
    _assert_same_steps(history, references["dft_tied"])


def test_zero3_without_dft_mm_keys_is_llamafactory_alone(setup, references):
    """Installing dft_mm changes nothing a run did not ask for (this crashed before)."""
    history, log = _run(setup, "zero3_no_keys", setup["untied"], {}, engine="zero3")
    assert "dft_mm:" not in log and "nll" not in history[0]
    _assert_same_steps(history, references["llamafactory"], keys=("loss", "grad_norm"))


def test_sft_loss_nll_through_the_fused_head_equals_llamafactory_alone(setup, references):
    history, log = _run(setup, "zero3_nll", setup["untied"], {"sft_loss": "nll"}, engine="zero3")
    assert "sft_loss=nll, fused lm_head+loss" in log
    _assert_same_steps(history, references["llamafactory"], keys=("loss", "grad_norm"))
    assert history[0]["nll"] == pytest.approx(history[0]["loss"], rel=REL)


def test_vision_language_model_under_zero3(setup, tiny_vl_model):
    data = setup["root"] / "vl_data"
    write_vl_training_set(vl_problems(8, seed=0, image_dir=data / "images"), data)
    vl = {"template": "qwen2_vl", "image_max_pixels": 56 * 56, "freeze_vision_tower": True}
    reference, _ = _run(setup, "vl_ref", tiny_vl_model, {**DFT, "dft_fused": False}, data=data,
                        dataset="synthetic_colours", **vl)
    history, log = _run(setup, "vl_zero3", tiny_vl_model, DFT, engine="zero3", data=data, dataset="synthetic_colours", **vl)
    assert "fused lm_head+loss" in log
    _assert_same_steps(history, reference)


ASFT = {"sft_loss": "asft", "asft_alpha": 0.5}


@pytest.fixture(scope="module")
def asft_reference(setup):
    """Single process, unfused ASFT: the frozen copy LLaMA-Factory builds, full [B, T, V] logits."""
    return _run(setup, "ref_asft", setup["untied"], {**ASFT, "dft_fused": False})[0]


@pytest.mark.parametrize("engine", ["ddp", "zero3"])
def test_asft_under_ddp_and_zero3_equals_one_process(setup, asft_reference, engine):
    """The reference model is placed as LLaMA-Factory places it: a full copy per rank under DDP,
    ZeRO-3 partitioned like the policy under ZeRO-3; step 2 has a non-zero KL."""
    history, log = _run(setup, f"{engine}_asft", setup["untied"], ASFT, engine=engine)
    assert "fused lm_head+loss" in log
    assert ("ZeRO-3 partitioned like the policy" in log) == (engine == "zero3")
    _assert_same_steps(history, asft_reference, keys=("loss", "nll", "grad_norm"))
    assert abs(history[0]["kl"]) < 1e-6 and history[1]["kl"] == pytest.approx(asft_reference[1]["kl"], rel=1e-3)


def test_lora_asft_under_zero3_uses_the_base_model(setup):
    lora = {**ASFT, "finetuning_type": "lora", "lora_rank": 4, "lora_target": "all", "learning_rate": 5e-3}
    reference, _ = _run(setup, "ref_lora_asft", setup["untied"], {**lora, "dft_fused": False})
    history, log = _run(setup, "zero3_lora_asft", setup["untied"], lora, engine="zero3")
    assert "LoRA adapters disabled" in log and "fused lm_head+loss" in log
    _assert_same_steps(history, reference, keys=("loss", "nll", "grad_norm"))


def test_fsdp1_and_fsdp2_through_torch(setup):
    """FSDP1 (this failed its state check before) and FSDP2, fused and unfused heads, DFT and
    ASFT against a reference sharded the same way, against one unsharded step on the whole batch."""
    script = Path(__file__).parent / "fixtures" / "engines" / "fsdp_step.py"
    sys.path.insert(0, str(script.parent))
    from fsdp_step import SPECS, batch, perturbed_reference

    proc = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", _free_port(), str(script), str(setup["untied"])],
        capture_output=True, text=True, timeout=600, env={**os.environ, **OFFLINE_ENV},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])

    from transformers import AutoModelForCausalLM

    from dft_mm.losses import sft_loss_and_stats

    expected = {}
    for name, spec in SPECS.items():
        model = AutoModelForCausalLM.from_pretrained(setup["untied"]).train()
        input_ids, labels = batch(model.config.vocab_size)
        ref_logits = perturbed_reference(setup["untied"])(input_ids=input_ids).logits.detach() if spec.needs_reference else None
        loss, stats = sft_loss_and_stats(model(input_ids=input_ids).logits, labels, spec, ref_logits=ref_logits)
        loss.backward()
        expected[name] = (loss.item(), stats, {n: p.grad.flatten() for n, p in model.named_parameters()})
    assert expected["asft"][1].kl > 1e-3  # the reference differs: the KL term is exercised
    for engine, runs in results.items():
        for run, got in runs.items():
            loss, stats, grads = expected[run.split("-")[0]]
            assert got["loss"] == pytest.approx(loss, rel=REL), (engine, run)
            assert got["nll"] == pytest.approx(stats.nll, rel=REL), (engine, run)
            if "kl" in got:
                assert got["kl"] == pytest.approx(stats.kl, rel=REL), (engine, run)
            for name, want in grads.items():
                grad = torch.tensor(got["grads"][name])
                assert float((grad - want).norm() / want.norm()) < REL, (engine, run, name)
