"""``dft_mm.demo.preloaded``: a training forked from the preloaded LLaMA-Factory is the
``llamafactory-cli train`` run itself, step for step; a failing one reports its exit code and log."""

from __future__ import annotations

import json

import pytest
import yaml

from dft_mm.demo import preloaded
from dft_mm.demo.run import TRAIN_ENV
from dft_mm.demo.synthetic import text_problems, write_text_training_set
from helpers import run_llamafactory_train, train_config

pytestmark = pytest.mark.e2e

RUNTIME = ("train_runtime", "train_samples_per_second", "train_steps_per_second")


def _history(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [{key: value for key, value in entry.items() if key not in RUNTIME} for entry in history]


def test_a_preloaded_training_equals_the_cli_run(tiny_text_model, tmp_path):
    data = tmp_path / "data"
    write_text_training_set(text_problems(8, seed=0), data)
    keys = {"template": "empty", "sft_loss": "asft", "max_steps": 2}
    cli, history = run_llamafactory_train(train_config(tiny_text_model, data, "synthetic_code", tmp_path / "cli", **keys),
                                          tmp_path / "cli")
    assert cli.returncode == 0, cli.stderr[-3000:]
    config = tmp_path / "forked.yaml"
    config.write_text(yaml.safe_dump(train_config(tiny_text_model, data, "synthetic_code", tmp_path / "forked", **keys)))
    assert preloaded.train(config, tmp_path / "forked.log", TRAIN_ENV) == 0
    assert "dft_mm: sft_loss=asft" in (tmp_path / "forked.log").read_text()  # the import hook patched it
    assert _history(tmp_path / "forked") == _history(tmp_path / "cli") and history

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(train_config(tiny_text_model, data, "synthetic_code", tmp_path / "bad", sft_loss="kl")))
    assert preloaded.train(bad, tmp_path / "bad.log", TRAIN_ENV) != 0
    assert "sft_loss must be one of nll, dft, asft, eaft" in (tmp_path / "bad.log").read_text()
    with pytest.raises(RuntimeError, match="must share the forkserver's environment"):
        preloaded.train(bad, tmp_path / "other.log", {**TRAIN_ENV, "OMP_NUM_THREADS": "2"})
