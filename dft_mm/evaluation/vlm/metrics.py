"""Benchmark metrics from scored rows (each row a dict with a boolean ``hit``). Percent, 0-100.

- MathVerse: accuracy per ``problem_version`` (column, else the ``metadata`` dict) + ``Overall``.
- MathVision (and custom TSVs): ``Overall`` + accuracy per ``category``.
- WeMath (four-dimensional metrics): the step rows (``key`` ``2steps_1``, ``2steps_2``,
  ``3steps_1``..``3`` ) and the multi-step row (``2steps_multi`` / ``3steps_multi``) of one
  problem share ``ID``; 2-step and 3-step problems are merged separately. Per problem:

  ======================  ==================================
  IK  (insufficient knowledge)  some step wrong, multi wrong
  IG  (inadequate generalisation) all steps right, multi wrong
  CM_strict / CM_loose     all / any step right, multi right
  RM_strict / RM_loose     any / all steps wrong, multi right
  ======================  ==================================

  With N problems: ``score_strict = (N - 0.5*IG - RM_strict - IK) / N`` (``score_loose``
  with RM_loose); IK, IG, CM rates are over N; RM rates are RM / (CM + RM) of the same
  flavour; S1 = accuracy over step rows, S2 / S3 = accuracy of the 2- / 3-step multi rows.
  A problem with missing rows is left out and counted in ``incomplete_problems``; a metric
  with nothing to measure (no 3-step problem, say) is None.

Example::

    >>> accuracy_by([{"hit": True, "category": "a"}, {"hit": False, "category": "b"}], "category")
    ({'Overall': 50.0, 'a': 100.0, 'b': 0.0}, {'Overall': [1, 2], 'a': [1, 1], 'b': [0, 1]})
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict


def _percent(part: float, whole: float) -> float | None:
    """``100 * part / whole``; None when nothing was measured (``whole == 0``)."""
    return 100.0 * part / whole if whole else None


def accuracy_by(rows: list[dict], key: str | None) -> tuple[dict[str, float], dict[str, list[int]]]:
    """``Overall`` and per-``key`` accuracy; also ``{name: [hits, total]}`` counts."""
    counts: dict[str, list[int]] = {"Overall": [0, 0]}
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        counts["Overall"][0] += bool(row["hit"])
        counts["Overall"][1] += 1
        if key is not None and row.get(key) is not None:
            groups[str(row[key])][0] += bool(row["hit"])
            groups[str(row[key])][1] += 1
    counts.update(sorted(groups.items()))
    return {name: _percent(hit, total) for name, (hit, total) in counts.items()}, counts


def mathverse_version(row: dict) -> str | None:
    """``problem_version`` from its column, else from the ``metadata`` dict literal."""
    if row.get("problem_version"):
        return row["problem_version"]
    metadata = row.get("metadata")
    if metadata:
        try:
            value = ast.literal_eval(metadata)
        except (ValueError, SyntaxError):
            return None
        if isinstance(value, dict):
            return value.get("problem_version")
    return None


def mathverse_metrics(rows: list[dict]) -> tuple[dict[str, float], dict]:
    """Accuracy per MathVerse problem version and overall."""
    versioned = [{**row, "problem_version": mathverse_version(row)} for row in rows]
    return accuracy_by(versioned, "problem_version")


def mathvision_metrics(rows: list[dict]) -> tuple[dict[str, float], dict]:
    """Overall and per-category accuracy (MathVision and custom TSVs)."""
    return accuracy_by(rows, "category")


_KEY = re.compile(r"^([23])steps_(\d|multi)$")


def _wemath_problems(rows: list[dict]) -> tuple[list[tuple[list[bool], bool, int]], int, int]:
    """``([(step_hits, multi_hit, n_steps)], incomplete, rows_without_key)``."""
    problems: dict[tuple[int, str], dict[str, bool]] = defaultdict(dict)
    unkeyed = 0
    for row in rows:
        match = _KEY.match(str(row.get("key") or ""))
        if not match or row.get("ID") is None:
            unkeyed += 1
            continue
        problems[(int(match.group(1)), str(row["ID"]))][match.group(2)] = bool(row["hit"])
    complete, incomplete = [], 0
    for (steps, _), parts in sorted(problems.items()):
        wanted = [str(i) for i in range(1, steps + 1)] + ["multi"]
        if any(part not in parts for part in wanted):
            incomplete += 1
            continue
        complete.append(([parts[str(i)] for i in range(1, steps + 1)], parts["multi"], steps))
    return complete, incomplete, unkeyed


def wemath_metrics(rows: list[dict]) -> tuple[dict[str, float | None], dict]:
    """WeMath's four-dimensional metrics and step accuracies (see module docstring)."""
    problems, incomplete, unkeyed = _wemath_problems(rows)
    n = len(problems)
    tally = defaultdict(int)
    step_hits = step_total = 0
    multi = {2: [0, 0], 3: [0, 0]}
    for steps_right, multi_right, n_steps in problems:
        all_right, any_right = all(steps_right), any(steps_right)
        step_hits += sum(steps_right)
        step_total += len(steps_right)
        multi[n_steps][0] += multi_right
        multi[n_steps][1] += 1
        if multi_right:
            tally["CM_strict"] += all_right
            tally["CM_loose"] += any_right
            tally["RM_strict"] += not all_right
            tally["RM_loose"] += not any_right
        else:
            tally["IG"] += all_right
            tally["IK"] += not all_right
    metrics = {
        "score_strict": _percent(n - 0.5 * tally["IG"] - tally["RM_strict"] - tally["IK"], n),
        "score_loose": _percent(n - 0.5 * tally["IG"] - tally["RM_loose"] - tally["IK"], n),
        "IK": _percent(tally["IK"], n),
        "IG": _percent(tally["IG"], n),
        "CM_strict": _percent(tally["CM_strict"], n),
        "CM_loose": _percent(tally["CM_loose"], n),
        "RM_strict": _percent(tally["RM_strict"], tally["CM_strict"] + tally["RM_strict"]),
        "RM_loose": _percent(tally["RM_loose"], tally["CM_loose"] + tally["RM_loose"]),
        "S1": _percent(step_hits, step_total),
        "S2": _percent(*multi[2]),
        "S3": _percent(*multi[3]),
    }
    counts = {
        "problems": n, "incomplete_problems": incomplete, "rows_without_key": unkeyed,
        **{name: tally[name] for name in ("IK", "IG", "CM_strict", "CM_loose", "RM_strict", "RM_loose")},
        "S1": [step_hits, step_total], "S2": multi[2], "S3": multi[3],
    }
    return metrics, counts
