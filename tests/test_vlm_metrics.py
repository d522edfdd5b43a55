"""Benchmark metrics: WeMath four-dimensional metrics on a hand-computed fixture, MathVerse
and MathVision breakdowns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dft_mm.evaluation.vlm.metrics import mathverse_metrics, mathvision_metrics, wemath_metrics
from dft_mm.evaluation.vlm.score import score

FIXTURES = Path(__file__).parent / "fixtures" / "vlm"


def _rows(plan):
    """``{(steps, ID): ([step hits], multi hit)}`` -> WeMath rows with ``hit``."""
    rows = []
    for (steps, problem), (step_hits, multi_hit) in plan.items():
        for number, hit in enumerate(step_hits, start=1):
            rows.append({"ID": problem, "key": f"{steps}steps_{number}", "hit": hit})
        rows.append({"ID": problem, "key": f"{steps}steps_multi", "hit": multi_hit})
    return rows


# The plan behind tests/fixtures/vlm/wemath_predictions.tsv. 2-step and 3-step problems
# reuse IDs 1 and 2: they must not be merged with each other.
PLAN = {
    (2, "1"): ([1, 1], 1),  # CM strict + loose
    (2, "2"): ([1, 0], 1),  # CM loose, RM strict
    (2, "3"): ([0, 0], 1),  # RM strict + loose
    (2, "4"): ([0, 0], 0),  # IK
    (3, "1"): ([1, 1, 1], 0),  # IG
    (3, "2"): ([1, 0, 0], 0),  # IK
}
# N=6, IK=2, IG=1, CM_strict=1, CM_loose=2, RM_strict=2, RM_loose=1
EXPECTED = {
    "score_strict": 100 * (6 - 0.5 - 2 - 2) / 6,  # 25.00
    "score_loose": 100 * (6 - 0.5 - 1 - 2) / 6,  # 41.67
    "IK": 100 * 2 / 6,
    "IG": 100 * 1 / 6,
    "CM_strict": 100 * 1 / 6,
    "CM_loose": 100 * 2 / 6,
    "RM_strict": 100 * 2 / (1 + 2),
    "RM_loose": 100 * 1 / (2 + 1),
    "S1": 100 * 7 / 14,  # step rows right: 2+1+0+0+3+1 of 14
    "S2": 100 * 3 / 4,
    "S3": 0.0,
}


def test_wemath_metrics_hand_computed():
    metrics, counts = wemath_metrics(_rows(PLAN))
    assert list(metrics) == list(EXPECTED)
    for key, value in EXPECTED.items():
        assert metrics[key] == pytest.approx(value), key
    assert counts["problems"] == 6 and counts["incomplete_problems"] == 0


def test_wemath_incomplete_problem_is_counted_not_scored():
    rows = _rows(PLAN) + [{"ID": "9", "key": "2steps_1", "hit": 1}, {"ID": "9", "key": "one_step", "hit": 1}]
    metrics, counts = wemath_metrics(rows)
    assert counts["incomplete_problems"] == 1 and counts["rows_without_key"] == 1
    assert metrics["score_strict"] == pytest.approx(EXPECTED["score_strict"])


def test_wemath_scored_from_prediction_file(tmp_path):
    result = score("WeMath", FIXTURES / "wemath_predictions.tsv", tmp_path)
    for key, value in EXPECTED.items():
        assert result[key] == pytest.approx(value, abs=1e-4), key
    saved = json.loads((tmp_path / "WeMath_score.json").read_text())
    assert saved["score_strict"] == pytest.approx(25.0)
    assert "score_strict,25.00," in (tmp_path / "WeMath_score.csv").read_text()


def test_mathverse_versions_from_column_or_metadata():
    rows = [
        {"hit": 1, "problem_version": "Vision Only"},
        {"hit": 0, "problem_version": "Vision Only"},
        {"hit": 1, "metadata": "{'split': 'testmini', 'problem_version': 'Text Lite'}"},
    ]
    metrics, counts = mathverse_metrics(rows)
    assert metrics == pytest.approx({"Overall": 200 / 3, "Text Lite": 100.0, "Vision Only": 50.0})
    assert counts["Vision Only"] == [1, 2]


def test_mathvision_overall_and_categories():
    rows = [{"hit": 1, "category": "counting"}, {"hit": 0, "category": "counting"}, {"hit": 0, "category": "algebra"}]
    metrics, _ = mathvision_metrics(rows)
    assert metrics == pytest.approx({"Overall": 100 / 3, "algebra": 0.0, "counting": 50.0})
