"""Read the score files VLMEvalKit (``ms-vlmeval`` 0.0.20) writes, and which judge made them.

Files next to a prediction file ``<model>_<dataset>.<ext>`` (``<judge>`` is the kit's
``--judge`` name, e.g. ``gpt-4o-mini``):

- MathVerse: ``<model>_<dataset>_<judge>_score.csv`` from ``MathVerse_acc``: columns
  ``split, Overall, <subject>..., <subfield>...``, one row per problem version (no overall
  row). Our ``Overall`` is the mean of the version rows' ``Overall`` (on MathVerse_MINI,
  788 questions per version, that is the accuracy over all rows).
- MathVision: ``<model>_<dataset>_<judge>_score.csv`` from ``MATH_V_acc``: columns
  ``Subject, tot, prefetch, hit, prefetch_rate, acc``, one row per category plus ``Overall``.
- WeMath: ``<model>_<dataset>_<judge tag>_score.csv`` (tag ``gpt4o-mini`` for
  ``gpt-4o-mini``, as the kit abbreviates), one row of percent strings (``"35.24%"``,
  ``"12.19% (64)"``). When the judge does not answer, the kit silently scores by exact
  matching (a literal ``Answer: X``) and still names the file after the judge; the judge's
  per-row file ``<model>_<dataset>_<judge tag>.<ext>`` is then missing, which is how
  :func:`score_file_judge` tells: it returns ``exact_matching``.

Example::

    parse_score_file("MathVerse", "out/m/m_MathVerse_MINI_gpt-4o-mini_score.csv")
    # {"Overall": 37.54, "Vision Only": 30.1, ...}
    find_score_files("out/m", "m")   # {"MathVerse_MINI": {"gpt-4o-mini": Path(...)}, ...}
"""

from __future__ import annotations

import re
from pathlib import Path

from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.datasets import KNOWN_DATASETS, MATHVERSE, MATHVISION, WEMATH

EXACT_MATCHING = "exact_matching"
# WeMath.evaluate's abbreviations of judge names in its file names.
WEMATH_JUDGE_TAGS = {"gpt-4-0125": "gpt4", "gpt-4-turbo": "gpt4-turbo", "gpt-4o-mini": "gpt4o-mini"}
_JUDGE_OF_TAG = {tag: judge for judge, tag in WEMATH_JUDGE_TAGS.items()}
# per-row judge output the kit writes before a WeMath score (any prediction format)
_STORAGE_SUFFIXES = (".xlsx", ".tsv", ".csv", ".json")
_WEMATH_COLUMNS = {
    "Score (Strict)": "score_strict", "Score (Loose)": "score_loose",
    "InsufficientKnowledge (Strict)": "IK", "InadequateGeneralization (Strict)": "IG",
    "CompleteMastery (Strict)": "CM_strict", "CompleteMastery (Loose)": "CM_loose",
    "RoteMemorization (Strict)": "RM_strict", "RoteMemorization (Loose)": "RM_loose",
    "One-step(S1)": "S1", "Two-step(S2)": "S2", "Three-step(S3)": "S3",
}
_PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)%(?:\s*\((\d+)\))?\s*$")


def _read_csv(path: Path, required: tuple[str, ...]):
    import pandas as pd

    frame = pd.read_csv(path)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise UserError(f"{path}: not a VLMEvalKit score file of this benchmark: missing column(s) "
                        f"{', '.join(missing)} (has {', '.join(map(str, frame.columns))})")
    return frame


def parse_mathverse_score(path: str | Path) -> dict[str, float]:
    """``{version: accuracy}`` for every ``split`` row, plus ``Overall`` = their mean."""
    frame = _read_csv(Path(path), ("split", "Overall"))
    if frame.empty:
        raise UserError(f"{path}: no problem-version rows")
    versions = {str(row["split"]): float(row["Overall"]) for _, row in frame.iterrows()}
    return {"Overall": sum(versions.values()) / len(versions), **dict(sorted(versions.items()))}


def parse_mathvision_score(path: str | Path) -> dict[str, float]:
    """``{Subject: acc}``, ``Overall`` included, in the kit's row order."""
    frame = _read_csv(Path(path), ("Subject", "acc"))
    return {str(row["Subject"]): float(row["acc"]) for _, row in frame.iterrows()}


def _percent(cell, path: Path, column: str) -> float:
    match = _PERCENT.match(str(cell))
    if not match:
        raise UserError(f"{path}: column {column!r} holds {cell!r}, not a percentage like '35.24%' or '12.19% (64)'")
    return float(match.group(1))


def parse_wemath_score(path: str | Path) -> dict[str, float]:
    """Strict and loose scores, the four dimensions (IK, IG, CM, RM) and S1-S3, in percent."""
    path = Path(path)
    frame = _read_csv(path, tuple(_WEMATH_COLUMNS))
    return {key: _percent(frame.loc[0, column], path, column) for column, key in _WEMATH_COLUMNS.items()}


_PARSERS = {MATHVERSE: parse_mathverse_score, MATHVISION: parse_mathvision_score, WEMATH: parse_wemath_score}


def parse_score_file(benchmark: str, path: str | Path) -> dict[str, float]:
    """The metrics of one score file of ``benchmark`` (``MathVerse``, ``MathVision``, ``WeMath``)."""
    return _PARSERS[benchmark](path)


def _split_name(filename: str, model_name: str) -> tuple[str, str] | None:
    """``(dataset, judge label)`` of ``<model>_<dataset>_<label>_score.csv`` (longest dataset wins)."""
    prefix, suffix = f"{model_name}_", "_score.csv"
    if not (filename.startswith(prefix) and filename.endswith(suffix)):
        return None
    rest = filename[len(prefix):-len(suffix)]
    names = [name for name in KNOWN_DATASETS if rest.startswith(f"{name}_")]
    if not names:
        return None
    dataset = max(names, key=len)
    return dataset, rest[len(dataset) + 1:]


def score_file_judge(path: str | Path, model_name: str) -> tuple[str, str]:
    """``(dataset, judge)`` of a score file: the judge is the kit's ``--judge`` name, or
    ``exact_matching`` for a WeMath file named after a judge but made without it (the kit's
    silent fallback: the judge's per-row file beside it is missing)."""
    path = Path(path)
    parts = _split_name(path.name, model_name)
    if parts is None:
        raise UserError(f"{path}: not named like VLMEvalKit's <model>_<dataset>_<judge>_score.csv for model "
                        f"{model_name!r} and a known dataset ({', '.join(KNOWN_DATASETS)})")
    dataset, label = parts
    if KNOWN_DATASETS[dataset].benchmark != WEMATH:
        return dataset, label
    stem = path.name[:-len("_score.csv")]
    judged = any((path.parent / f"{stem}{suffix}").is_file() for suffix in _STORAGE_SUFFIXES)
    if label == EXACT_MATCHING or not judged:
        return dataset, EXACT_MATCHING
    return dataset, _JUDGE_OF_TAG.get(label, label)


def find_score_files(folder: str | Path, model_name: str) -> dict[str, dict[str, Path]]:
    """``{dataset: {judge: score file}}`` for ``model_name``'s files under ``folder`` (recursive;
    the newest file wins for one dataset and judge)."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(Path(folder).rglob(f"{model_name}_*_score.csv"), key=lambda p: p.stat().st_mtime):
        if _split_name(path.name, model_name) is None:
            continue
        dataset, judge = score_file_judge(path, model_name)
        found.setdefault(dataset, {})[judge] = path
    return found
