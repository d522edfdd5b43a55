"""``dft_mm.demo.preloaded``: a training forked from the preloaded LLaMA-Factory is the
``llamafactory-cli train`` run itself, step for step; a failing one reports its exit code and log."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from multiprocessing import forkserver

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


def test_a_training_whose_forkserver_dies_reports_its_own_exit(tiny_text_model, tmp_path, capfd):
    """The forkserver is killed while a training runs: multiprocessing then says 255 at once, though
    the training goes on. ``train`` waits for the training itself and returns the exit code it
    recorded, saying so; the next training starts a new forkserver."""
    data = tmp_path / "data"
    write_text_training_set(text_problems(8, seed=0), data)
    configs = []
    for name in ("orphaned", "next"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(train_config(tiny_text_model, data, "synthetic_code", tmp_path / name,
                                                    template="empty", max_steps=20)))
        configs.append(path)
    codes = []
    worker = threading.Thread(target=lambda: codes.append(preloaded.train(configs[0], tmp_path / "orphaned.log", TRAIN_ENV)))
    worker.start()
    deadline = time.monotonic() + 120
    while "Running training" not in ((tmp_path / "orphaned.log").read_text() if (tmp_path / "orphaned.log").exists() else ""):
        assert time.monotonic() < deadline and worker.is_alive(), "the training never started"
        time.sleep(0.05)
    os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
    worker.join(timeout=300)
    assert codes == [0]
    assert (tmp_path / "orphaned" / "trainer_state.json").is_file()  # it had finished when train returned
    assert "the forkserver's report of" in capfd.readouterr().err
    assert preloaded.train(configs[1], tmp_path / "next.log", TRAIN_ENV) == 0
