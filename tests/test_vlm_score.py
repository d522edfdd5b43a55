"""Scoring prediction files without a judge (the proxy), the extraction cache, and the judged
route's input checks (the judged route itself runs the kit: tests/test_vlm_kit.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dft_mm.cli import main
from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.score import score


def _write_predictions(path: Path, predictions: list[str]) -> Path:
    rows = [
        ("1", "How many circles are there?", "3", "[]", "counting"),
        ("2", "Which shape is shown?", "B", "['circle', 'square', 'triangle']", "shapes"),
        ("3", "How many squares are there?", "2", "[]", "counting"),
        ("4", "What is the area?", "\\frac{1}{2}", "[]", "area"),
    ]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(["index", "question", "answer", "choices", "category", "prediction"])
        for row, prediction in zip(rows, predictions):
            writer.writerow([*row, prediction])
    return path


PREDICTIONS = [
    "I counted the circles carefully and they match the number of corners of a triangle",
    "It looks like the second one to me",
    "I have no idea what this shows",
    "The area is \\boxed{0.5}",
]


def test_cache_reuses_rows_until_a_prediction_changes(tmp_path):
    predictions = _write_predictions(tmp_path / "m_shapes.tsv", PREDICTIONS)
    first = score(str(tmp_path / "shapes.tsv"), predictions, tmp_path / "out")
    cache = tmp_path / "out" / "shapes_extract.jsonl"
    assert len(cache.read_text().splitlines()) == 4
    again = score(str(tmp_path / "shapes.tsv"), predictions, tmp_path / "out")
    assert again["Overall"] == first["Overall"] and len(cache.read_text().splitlines()) == 4  # all reused
    _write_predictions(predictions, [PREDICTIONS[0], "I pick square", *PREDICTIONS[2:]])
    changed = score(str(tmp_path / "shapes.tsv"), predictions, tmp_path / "out")
    assert changed["Overall"] == pytest.approx(50.0)  # "square" is option B: right
    assert len(cache.read_text().splitlines()) == 5  # only the changed row was redone


def test_without_judge_rules_only(tmp_path):
    predictions = _write_predictions(tmp_path / "m_shapes.tsv", PREDICTIONS)
    result = score(str(tmp_path / "shapes.tsv"), predictions, tmp_path)
    assert result["Overall"] == pytest.approx(25.0)
    assert result["details"]["scored"] == 4 and result["details"]["skipped"] == {}
    assert (result["scorer"], result["judge"], result["system_prompt"]) == ("judge-free", None, None)
    assert json.loads((tmp_path / "shapes_score.json").read_text())["scorer"] == "judge-free"
    metrics = [row[0] for row in csv.reader((tmp_path / "shapes_score.csv").open())][1:]
    assert metrics == ["Overall", "area", "counting", "shapes"]  # no record keys among the metrics


def test_judged_route_checks_its_inputs_first(tmp_path, capsys):
    predictions = _write_predictions(tmp_path / "m_shapes.tsv", PREDICTIONS)
    code = main(["eval", "vlm", "score", "--dataset", "shapes.tsv", "--predictions", str(predictions),
                 "--out", str(tmp_path / "out"), "--judge", "http://127.0.0.1:9/v1", "--judge-model", "j"])
    assert code == 2 and "exists for its datasets only" in capsys.readouterr().err
    with pytest.raises(UserError, match="--judge needs --judge-model"):
        score("MathVision", predictions, tmp_path / "out", judge="http://127.0.0.1:9/v1")


def test_rows_without_gold_are_counted(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("index\tquestion\tanswer\tprediction\n1\tq\t3\t3\n2\tq\t\t4\n")
    result = score("custom.tsv", path, tmp_path)
    assert result["Overall"] == 100.0
    assert result["details"]["skipped"] == {"no gold answer": 1} and result["details"]["rows"] == 2


def test_extraction_cache_survives_a_line_cut_short(tmp_path):
    """A killed run leaves a partial last line: it is dropped, and the next record stays readable."""

    from dft_mm.evaluation.vlm.extract import Extraction
    from dft_mm.evaluation.vlm.score import ExtractionCache

    path = tmp_path / "x_extract.jsonl"
    whole = {"index": "1", "prediction": "A", "extracted": "A", "method": "letter"}
    path.write_text(json.dumps(whole) + "\n" + '{"index": "2", "predic')
    cache = ExtractionCache(path)
    assert cache.get("1", "A") == Extraction("A", "letter") and cache.get("2", "B") is None
    cache.put("2", "B", Extraction("B", "letter"))
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == ["1", "2"]
    assert ExtractionCache(path).get("2", "B") == Extraction("B", "letter")
