"""The real VLMEvalKit (ms-vlmeval, in its own environment) scoring prediction files these tests
build, with a deterministic judge server on 127.0.0.1 (tests/fixtures/vlm/judge_server.py).

Per dataset, on one prediction file written by the kit's own ``dump``:

- the kit's runner (``python -m vlmeval.run --mode eval``, through our adapter) scores it;
- ``score_predictions(..., judge=URL)`` (our judged route: the kit's own procedure) scores it;
- both equal the numbers worked out by hand from the judge's rules, and our parser reads the
  kit's files into exactly the kit's numbers.

The runner checks a benchmark TSV's MD5 against VLMEvalKit's and downloads the official file on
a mismatch; here (offline, tiny TSVs) ``sitecustomize.py`` sets those constants to the tiny
files' MD5s inside the kit's process. Nothing else of the kit is changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.kit import find_kit_python
from dft_mm.evaluation.vlm.kit_files import EXACT_MATCHING, find_score_files, parse_score_file
from dft_mm.evaluation.vlm.kit_score import score_with_kit
from dft_mm.evaluation.vlm.datasets import spec_for
from dft_mm.evaluation.vlm.score import score_predictions
from dft_mm.evaluation.vlm.vlmevalkit import collect_results, run_vlmevalkit

JUDGE_SERVER = Path(__file__).parent / "fixtures" / "vlm" / "judge_server.py"
MODEL = "tiny-vl"
JUDGE = "local-judge"
_DUMP = "import json, sys, pandas as pd\nfrom vlmeval.smp import dump\ndump(pd.DataFrame(json.load(open(sys.argv[1]))), sys.argv[2])\n"
_SITECUSTOMIZE = """import json, os
_md5 = json.loads(os.environ.get("DFT_MM_TEST_MD5", "{}"))
if _md5:
    from vlmeval.dataset import MathVerse, MathVision, WeMath
    for _cls in (MathVerse, MathVision, WeMath):
        _cls.DATASET_MD5.update({name: value for name, value in _md5.items() if name in _cls.DATASET_URL})
"""


@pytest.fixture(scope="module")
def kit_python() -> str:
    try:
        return find_kit_python()
    except UserError as err:
        pytest.fail(f"{err} (make setup installs it)")


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """``(base URL, request log)`` of a judge server process, stopped after the module."""
    log = tmp_path_factory.mktemp("judge") / "requests.jsonl"
    process = subprocess.Popen([sys.executable, str(JUDGE_SERVER), "--log", str(log)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        process.terminate()
        process.wait(timeout=10)


def _requests(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _kit_dump(kit_python: str, rows: list[dict], path: Path) -> Path:
    """Write ``rows`` with VLMEvalKit's own ``dump`` (its .xlsx / .tsv writer)."""
    source = path.with_suffix(".json")
    source.write_text(json.dumps(rows))
    subprocess.run([kit_python, "-c", _DUMP, str(source), str(path)], check=True, timeout=300)
    return path


def _kit_runner(kit_python: str, tmp: Path, dataset: str, rows: list[dict], judge_url: str, judge_name: str) -> dict:
    """Score ``rows`` (the dataset TSV without images + predictions) with the kit's runner."""
    data = tmp / "LMUData"
    tsv = _kit_dump(kit_python, [{k: v for k, v in row.items() if k != "prediction"} for row in rows],
                    data / f"{dataset}.tsv")
    work = tmp / "work"
    _kit_dump(kit_python, rows, work / MODEL / f"{MODEL}_{dataset}.xlsx")
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = {"LMUData": str(data), "PYTHONPATH": str(site),
           "DFT_MM_TEST_MD5": json.dumps({dataset: hashlib.md5(tsv.read_bytes()).hexdigest()})}
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return run_vlmevalkit(MODEL, dataset, work, kit_python=kit_python, judge=judge_name, judge_base_url=judge_url,
                              mode="eval", out=tmp / "adapter")
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _both_routes(kit_python, tmp_path, dataset, rows, judge):
    """``(runner result, our judged result, our proxy result)`` on one prediction file."""
    url, _ = judge
    runner = _kit_runner(kit_python, tmp_path / "runner", dataset, rows, url, JUDGE)
    predictions = _kit_dump(kit_python, rows, tmp_path / "ours" / f"{MODEL}_{dataset}.xlsx")
    judged = score_predictions(dataset, predictions, tmp_path / "judged", judge=url, judge_model=JUDGE,
                               kit_python=kit_python)
    proxy = score_predictions(dataset, predictions, tmp_path / "proxy")
    print(json.dumps({"dataset": dataset, "vlmevalkit_runner": runner["results"][dataset], "ours_judged": judged,
                      "ours_judge_free": proxy}, indent=1, default=str))
    return runner["results"][dataset], judged, proxy


def _metrics(result: dict) -> dict:
    return {key: value for key, value in result.items()
            if key not in ("scorer", "judge", "judge_url", "system_prompt", "details", "score_file", "model", "benchmark")}


def _mathverse_row(index, version, answer, prediction, question_type="free-form", subject="plane geometry"):
    return {"index": index, "question": f"Question {index}", "question_for_eval": f"Question {index} for eval",
            "answer": answer, "question_type": question_type, "problem_version": version,
            "metadata": str({"split": "testmini", "subject": subject, "subfield": "length"}), "prediction": prediction}


MATHVERSE_ROWS = [
    _mathverse_row(1, "Vision Only", "3", "The sides add up, so the answer is 3."),  # exact: no judgement call
    _mathverse_row(2, "Vision Only", "2\\sqrt{3}", "Thus the answer is 2 \\sqrt{3}.", subject="functions"),  # judged 1
    _mathverse_row(3, "Vision Only", "B", "I cannot tell from the figure.", "multi-choice", "functions"),  # null
    _mathverse_row(4, "Vision Dominant", "5", "The answer is 5"),
    _mathverse_row(5, "Vision Dominant", "A", "The answer is C", "multi-choice", "functions"),  # judged 0
]


def test_mathverse_runner_and_judged_route_agree(kit_python, tmp_path, judge):
    runner, judged, proxy = _both_routes(kit_python, tmp_path, "MathVerse_MINI", MATHVERSE_ROWS, judge)
    # by hand: Vision Only 2 of 3, Vision Dominant 1 of 2; Overall is the mean of the versions
    expected = {"Overall": (200 / 3 + 50) / 2, "Vision Only": 200 / 3, "Vision Dominant": 50.0}
    assert _metrics(runner) == pytest.approx(expected, abs=1e-9)
    assert _metrics(judged) == _metrics(runner)  # identical floats
    assert (runner["scorer"], runner["judge"], judged["scorer"], judged["judge"]) == (
        "vlmevalkit", JUDGE, "vlmevalkit", JUDGE)
    assert proxy["scorer"] == "judge-free" and proxy["judge"] is None
    kinds = {request["kind"] for request in _requests(judge[1])}
    assert {"mathverse_extract", "mathverse_score"} <= kinds
    assert {request["model"] for request in _requests(judge[1])} == {JUDGE}
    # the parser on the kit's own file gives the kit's own numbers
    score_file = Path(runner["score_file"])
    assert parse_score_file("MathVerse", score_file) == _metrics(runner)
    adapter_json = json.loads((tmp_path / "runner" / "adapter" / "MathVerse_MINI_score.json").read_text())
    assert adapter_json["scorer"] == "vlmevalkit" and adapter_json["judge"] == JUDGE
    assert "system_prompt" in adapter_json


MATHVISION_ROWS = [
    {"index": 1, "question": "How many?", "answer": "3", "choices": "[]", "category": "counting", "prediction": "3"},
    {"index": 2, "question": "Which shape?", "answer": "B", "choices": "['circle', 'square', 'triangle']",
     "category": "counting", "prediction": "B"},
    {"index": 3, "question": "Area?", "answer": "1/2", "choices": "[]", "category": "area",
     "prediction": "It is half of the square, so the answer is 0.5."},  # judge extracts 0.5; is_equal(0.5, 1/2)
    {"index": 4, "question": "Side?", "answer": "4", "choices": "[]", "category": "area",
     "prediction": "I think the answer is 5."},
    {"index": 5, "question": "Which count?", "answer": "C", "choices": "['1', '2', '3']", "category": "counting",
     "prediction": "It could be A or B"},
]


def test_mathvision_runner_and_judged_route_agree(kit_python, tmp_path, judge):
    runner, judged, _ = _both_routes(kit_python, tmp_path, "MathVision", MATHVISION_ROWS, judge)
    assert _metrics(runner) == pytest.approx({"Overall": 60.0, "area": 50.0, "counting": 200 / 3}, abs=1e-9)
    assert _metrics(judged) == _metrics(runner)
    assert "mathvision_extract" in {request["kind"] for request in _requests(judge[1])}


def _wemath_row(index, problem, key, answer, prediction):
    return {"index": index, "ID": problem, "key": key, "question": f"{problem} {key}?", "A": "square", "B": "circle",
            "C": "triangle", "D": "hexagon", "answer": answer, "knowledge concept": "Area of Parallelograms",
            "prediction": prediction}


WEMATH_ROWS = [
    _wemath_row(1, "p1", "2steps_1", "A", "The answer is A."),
    _wemath_row(2, "p1", "2steps_2", "B", "My final answer is (B), though C is close"),  # judge matches B
    _wemath_row(3, "p1", "2steps_multi", "C", "The answer is C."),
    _wemath_row(4, "p2", "2steps_1", "A", "The answer is D."),
    _wemath_row(5, "p2", "2steps_2", "B", "The answer is B."),
    _wemath_row(6, "p2", "2steps_multi", "C", "The answer is C."),
    _wemath_row(7, "p3", "3steps_1", "A", "The answer is A."),
    _wemath_row(8, "p3", "3steps_2", "B", "The answer is B."),
    _wemath_row(9, "p3", "3steps_3", "C", "The answer is C."),
    _wemath_row(10, "p3", "3steps_multi", "D", "The answer is A."),
]


def test_wemath_runner_and_judged_route_agree(kit_python, tmp_path, judge):
    runner, judged, _ = _both_routes(kit_python, tmp_path, "WeMath", WEMATH_ROWS, judge)
    # p1 complete mastery, p2 rote memorisation (strict; loose: mastery), p3 inadequate generalisation;
    # the kit divides by WeMath's 525 problems whatever the file holds
    strict, loose = (525 - 0.5 - 1) / 525 * 100, (525 - 0.5) / 525 * 100
    metrics = _metrics(runner)
    assert metrics["score_strict"] == round(strict, 2) and metrics["score_loose"] == round(loose, 2)
    assert (metrics["RM_strict"], metrics["RM_loose"], metrics["S1"]) == (50.0, 0.0, round(600 / 7, 2))
    assert _metrics(judged) == metrics and judged["judge"] == JUDGE
    assert "choice" in {request["kind"] for request in _requests(judge[1])}


def test_wemath_exact_matching_fallback_is_refused_or_labelled(kit_python, tmp_path):
    """A judge that does not answer: the kit falls back to exact matching and names the file
    after the judge; we refuse that number, or label it when exact matching was asked for."""
    predictions = _kit_dump(kit_python, WEMATH_ROWS, tmp_path / f"{MODEL}_WeMath.xlsx")
    with pytest.raises(UserError, match="exact matching"):
        score_with_kit(spec_for("WeMath"), predictions, tmp_path / "out", judge_url="http://127.0.0.1:9/v1",
                       judge_model="gpt-4o-mini", kit_python=kit_python, retry=1)
    kit_dir = tmp_path / "out" / "vlmevalkit"
    assert (kit_dir / f"{MODEL}_WeMath_gpt4o-mini_score.csv").is_file()  # named after the judge all the same
    assert find_score_files(kit_dir, MODEL) == {"WeMath": {EXACT_MATCHING: kit_dir / f"{MODEL}_WeMath_gpt4o-mini_score.csv"}}
    (kit_dir / MODEL).mkdir()
    for path in kit_dir.glob(f"{MODEL}_WeMath*"):
        path.rename(kit_dir / MODEL / path.name)
    with pytest.raises(UserError, match="pass --judge exact_matching"):
        collect_results(kit_dir, MODEL, ["WeMath"], judge="gpt-4o-mini")
    accepted = collect_results(kit_dir, MODEL, ["WeMath"], judge=EXACT_MATCHING)["WeMath"]
    assert accepted["judge"] == EXACT_MATCHING and accepted["scorer"] == "vlmevalkit"
    assert accepted["S1"] == 0.0  # exact matching wants a literal "Answer: X"; none of these predictions has one
