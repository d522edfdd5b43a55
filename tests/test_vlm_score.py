"""Scoring prediction files: VLMEvalKit's own .xlsx, the --judge route against a local
OpenAI-compatible HTTP server (a canned network peer), and the resumable extraction cache."""

from __future__ import annotations

import csv
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from dft_mm.cli import main
from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.score import score_predictions

FIXTURES = Path(__file__).parent / "fixtures" / "vlm"


def test_rescoring_a_vlmevalkit_xlsx(tmp_path):
    result = score_predictions("MathVision_MINI", FIXTURES / "vlmevalkit" / "Qwen2.5-VL-3B-Instruct_MathVision_MINI.xlsx",
                               tmp_path)
    assert result["Overall"] == pytest.approx(80.0)
    assert result["counting"] == pytest.approx(100.0) and result["metric geometry - length"] == 0.0
    scored = pd.read_csv(tmp_path / "MathVision_MINI_scored.tsv", sep="\t", dtype=str)
    assert list(scored["hit"]) == ["1", "1", "1", "1", "0"]
    assert list(scored["extracted"]) == ["3", "B", "0.5", "12", "B"]
    assert result["details"]["extraction"] == {"boxed": 1, "last_expression": 2, "phrase": 2}


class _CannedJudge(BaseHTTPRequestHandler):
    """Replies like an OpenAI chat endpoint; the answer depends on the response quoted in the prompt."""

    replies: ClassVar[dict[str, str]] = {"circles": "3", "second one": "B", "no idea": "NONE"}
    requests: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        prompt = body["messages"][0]["content"]
        response = prompt.split("Response:")[1]
        if "server error" in response:
            self.send_error(500)
            return
        reply = next((answer for key, answer in self.replies.items() if key in response), "NONE")
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    _CannedJudge.requests = []
    server = HTTPServer(("127.0.0.1", 0), _CannedJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


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


def test_judge_extracts_when_rules_fail_and_cache_resumes(tmp_path, judge_url):
    predictions = _write_predictions(tmp_path / "m_shapes.tsv", PREDICTIONS)
    result = score_predictions(str(tmp_path / "shapes.tsv"), predictions, tmp_path / "out", judge=judge_url,
                               judge_model="local-judge")
    assert result["Overall"] == pytest.approx(75.0)  # judge rescues rows 1-2, row 3 stays unanswered
    assert result["details"]["extraction"] == {"boxed": 1, "judge": 2, "judge_none": 1}
    assert len(_CannedJudge.requests) == 3  # the boxed row never reaches the judge
    assert {(request["path"], request["model"]) for request in _CannedJudge.requests} == {
        ("/v1/chat/completions", "local-judge")}
    multiple_choice = [r["messages"][0]["content"] for r in _CannedJudge.requests if "second one" in str(r)]
    assert len(multiple_choice) == 1 and "option letter (A, B, C)" in multiple_choice[0]

    again = score_predictions(str(tmp_path / "shapes.tsv"), predictions, tmp_path / "out", judge=judge_url,
                              judge_model="local-judge")
    assert again["Overall"] == result["Overall"] and len(_CannedJudge.requests) == 3  # all from the cache

    _write_predictions(predictions, [PREDICTIONS[0], "I pick circle", *PREDICTIONS[2:]])
    changed = score_predictions(str(tmp_path / "shapes.tsv"), predictions, tmp_path / "out", judge=judge_url,
                                judge_model="local-judge")
    assert changed["Overall"] == pytest.approx(50.0)  # "circle" is option A: wrong
    assert len(_CannedJudge.requests) == 3  # the changed row was settled by the rules (option text)

    other_judge = score_predictions(str(tmp_path / "shapes.tsv"), predictions, tmp_path / "out", judge=judge_url,
                                    judge_model="another-judge")
    assert other_judge["Overall"] == changed["Overall"]
    assert len(_CannedJudge.requests) == 5  # a new judge redoes the judged rows (1 and 3), not the cache


def test_judge_failure_keeps_finished_rows(tmp_path, judge_url):
    predictions = _write_predictions(tmp_path / "m_shapes.tsv", [*PREDICTIONS[:2], "server error", PREDICTIONS[3]])
    with pytest.raises(UserError, match="judge endpoint .* failed after 3 tries"):
        score_predictions(str(tmp_path / "shapes.tsv"), predictions, tmp_path / "out", judge=judge_url)
    cached = [json.loads(line) for line in (tmp_path / "out" / "shapes_extract.jsonl").read_text().splitlines()]
    assert {(r["index"], r["method"]) for r in cached} == {("1", "judge"), ("2", "judge"), ("4", "boxed")}


def test_without_judge_rules_only(tmp_path):
    predictions = _write_predictions(tmp_path / "m_shapes.tsv", PREDICTIONS)
    result = score_predictions(str(tmp_path / "shapes.tsv"), predictions, tmp_path)
    assert result["Overall"] == pytest.approx(25.0)
    assert result["details"]["scored"] == 4 and result["details"]["skipped"] == {}


def test_cli_score_reports_unreachable_judge(tmp_path, capsys):
    predictions = _write_predictions(tmp_path / "m_shapes.tsv", PREDICTIONS)
    code = main(["eval", "vlm", "score", "--dataset", "shapes.tsv", "--predictions", str(predictions),
                 "--out", str(tmp_path / "out"), "--judge", "http://127.0.0.1:9/v1"])
    assert code == 2
    assert "judge endpoint http://127.0.0.1:9/v1/chat/completions failed" in capsys.readouterr().err


def test_rows_without_gold_are_counted(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("index\tquestion\tanswer\tprediction\n1\tq\t3\t3\n2\tq\t\t4\n")
    result = score_predictions("custom.tsv", path, tmp_path)
    assert result["Overall"] == 100.0
    assert result["details"]["skipped"] == {"no gold answer": 1} and result["details"]["rows"] == 2


def test_extraction_cache_survives_a_line_cut_short(tmp_path):
    """A killed run leaves a partial last line: it is dropped, and the next record stays readable."""
    import json

    from dft_mm.evaluation.vlm.extract import Extraction
    from dft_mm.evaluation.vlm.score import ExtractionCache

    path = tmp_path / "x_extract.jsonl"
    whole = {"index": "1", "prediction": "A", "judge": None, "extracted": "A", "method": "letter"}
    path.write_text(json.dumps(whole) + "\n" + '{"index": "2", "predic')
    cache = ExtractionCache(path)
    assert cache.get("1", "A", None) == Extraction("A", "letter") and cache.get("2", "B", None) is None
    cache.put("2", "B", None, Extraction("B", "letter"))
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == ["1", "2"]
    assert ExtractionCache(path).get("2", "B", None) == Extraction("B", "letter")
