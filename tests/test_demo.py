"""The demo's pipeline at a reduced size ("smoke" plan): every stage runs and writes its files."""

from __future__ import annotations

import csv
import json

import pytest

from dft_mm.demo import run_demo

pytestmark = pytest.mark.e2e


def test_demo_pipeline_smoke(tmp_path):
    assert run_demo(tmp_path, "smoke") == 0
    rows = list(csv.DictReader((tmp_path / "demo_results.csv").open()))
    assert [r["model"] for r in rows] == [f"{t}-{m}" for t in ("text", "vl") for m in ("init", "base", "sft", "dft")]
    assert all(0 <= float(r["score (%)"]) <= 100 for r in rows)
    for task in ("text", "vl"):
        for label in ("base", "sft", "dft"):
            history = json.loads((tmp_path / "runs" / f"{task}-{label}" / "trainer_state.json").read_text())["log_history"]
            assert any("mean_target_prob" in entry for entry in history)
        tokens = json.loads((tmp_path / "runs" / f"{task}-dft" / "analysis" / "token_probs.json").read_text())
        assert set(tokens["models"]) == {"base", "sft", "dft"}
    assert (tmp_path / "runs" / "text-sft" / "eval" / "multipl-e-python_score.json").exists()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "text-dft" in report and "vl-sft" in report
    assert (tmp_path / "report" / "report.html").stat().st_size > 10_000  # plots embedded
