"""Helpers for tests that run the real ``llamafactory-cli`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def run_llamafactory_train(config: dict, workdir: Path, env: dict | None = None, timeout: int = 300):
    """Write ``config`` as YAML and run ``llamafactory-cli train`` on it.

    Returns ``(completed_process, log_history)``; ``log_history`` is the per-step training
    logs from ``trainer_state.json`` (empty when the run failed).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    full_env = {**os.environ, **OFFLINE_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(
        [str(BIN / "llamafactory-cli"), "train", str(path)],
        env=full_env, capture_output=True, text=True, timeout=timeout, cwd=workdir,
    )
    state = Path(config["output_dir"]) / "trainer_state.json"
    history = json.loads(state.read_text())["log_history"] if proc.returncode == 0 and state.exists() else []
    return proc, [entry for entry in history if "loss" in entry]
