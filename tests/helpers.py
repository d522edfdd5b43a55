"""Helpers for tests that run the real ``llamafactory-cli`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import yaml

from conftest import OFFLINE_ENV

BIN = Path(sys.executable).parent


def train_config(model: Path, dataset_dir: Path, dataset: str, output_dir: Path, **overrides) -> dict:
    """A minimal CPU full-finetune LLaMA-Factory config; ``overrides`` win."""
    config = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "dataset": dataset,
        "dataset_dir": str(dataset_dir),
        "template": "qwen",
        "cutoff_len": 128,
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1.0e-3,
        "disable_shuffling": True,
        "report_to": "none",
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        "preprocessing_num_workers": 1,
        "seed": 0,
    }
    config.update(overrides)
    return config


# A torchrun rank can abort after its training has finished, while Python finalises: torch's gloo
# worker threads outlive destroy_process_group (DDP and DeepSpeed keep the group alive), and one that
# frees a finished all-gather's tensors then needs the GIL; Python 3.11 ends such a thread with
# pthread_exit, whose forced unwind through a noexcept destructor calls std::terminate. Core dump of
# one (2026-12-07): ProcessGroupGloo::runLoop -> ~AsyncAllgatherWork -> ~TensorImpl -> decref_pyobject
# -> take_gil -> PyThread_exit_thread -> std::terminate. LLaMA-Factory alone has the same live threads
# at exit (docs/support-matrix.md). Such a run is started again, with a warning, at most twice.
EXIT_ABORT = "terminate called without an active exception"


def aborted_after_finishing(proc: subprocess.CompletedProcess, state: Path, started: float) -> bool:
    """The run failed only because a rank aborted at exit: SIGABRT with ``EXIT_ABORT``, after this
    run wrote a final ``trainer_state.json`` (its last entry has ``train_runtime``)."""
    if proc.returncode == 0 or EXIT_ABORT not in proc.stderr or "SIGABRT" not in proc.stderr:
        return False
    if not state.exists() or state.stat().st_mtime < started:
        return False
    history = json.loads(state.read_text())["log_history"]
    return bool(history) and "train_runtime" in history[-1]


def run_llamafactory_train(config: dict, workdir: Path, env: dict | None = None, timeout: int = 300):
    """Write ``config`` as YAML and run ``llamafactory-cli train`` on it.

    Returns ``(completed_process, log_history)``; ``log_history`` is the per-step training
    logs from ``trainer_state.json`` (empty when the run failed). A torchrun run whose only
    failure is the exit-time abort above is run again (at most twice), and says so in a warning.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    full_env = {**os.environ, **OFFLINE_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    state = Path(config["output_dir"]) / "trainer_state.json"
    for attempt in (1, 2, 3):
        started = time.time()
        proc = subprocess.run(
            [str(BIN / "llamafactory-cli"), "train", str(path)],
            env=full_env, capture_output=True, text=True, timeout=timeout, cwd=workdir,
        )
        if attempt == 3 or full_env.get("FORCE_TORCHRUN") != "1" or not aborted_after_finishing(proc, state, started):
            break
        warnings.warn(f"{path}: a rank aborted at interpreter exit after the training finished "
                      f"({EXIT_ABORT!r}, torch's gloo teardown); running it again ({attempt + 1} of 3)", stacklevel=2)
    history = json.loads(state.read_text())["log_history"] if proc.returncode == 0 and state.exists() else []
    return proc, [entry for entry in history if "loss" in entry]
