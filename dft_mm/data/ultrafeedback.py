"""UltraFeedback -> best-response SFT data (the DFT paper's code setup).

For every prompt of ``openbmb/UltraFeedback`` the completion with the highest mean rating is
kept: a completion's score is the mean of its integer ``Rating`` over the aspects
:data:`ASPECTS`, ignoring ``"N/A"``; ties go to the higher ``overall_score``, then to the
earlier completion. ``num_prompts`` prompts are then sampled (seeded) from the valid rows.

Output (alpaca format) in ``out_dir``: ``ultrafeedback_best.jsonl`` with ``instruction``,
``output``, ``source``, ``score``, ``model``; ``dataset_info.json`` (entry
``ultrafeedback_best``); ``stats.json``.

Example::

    dft-mm data ultrafeedback --input openbmb/UltraFeedback --out data/ultrafeedback
"""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

from dft_mm.data.io import (
    ConversionStats,
    RowError,
    add_io_arguments,
    convert_rows,
    open_rows,
    print_stats,
    write_outputs,
)
from dft_mm.errors import UserError

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
DATASET_NAME = "ultrafeedback_best"
FILE_NAME = "ultrafeedback_best.jsonl"
DATASET_INFO_ENTRY = {"file_name": FILE_NAME, "columns": {"prompt": "instruction", "response": "output"}}


def _rating(annotation: Any) -> int | None:
    """Integer rating of one aspect annotation (object or one-element list), None if N/A or absent."""
    if isinstance(annotation, list):
        annotation = annotation[0] if len(annotation) == 1 else None
    if not isinstance(annotation, dict):
        return None
    value = annotation.get("Rating")
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit():  # "N/A" and anything else non-numeric
            return None
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 5:
        return None
    return int(value)


def completion_score(completion: dict[str, Any]) -> float | None:
    """Mean integer rating over :data:`ASPECTS`, skipping N/A; ``None`` when no aspect is rated."""
    annotations = completion.get("annotations")
    if not isinstance(annotations, dict):
        return None
    ratings = [r for r in (_rating(annotations.get(aspect)) for aspect in ASPECTS) if r is not None]
    return sum(ratings) / len(ratings) if ratings else None


def _overall(completion: dict[str, Any]) -> float:
    try:
        value = float(completion.get("overall_score"))
    except (TypeError, ValueError):
        return -math.inf
    return value if math.isfinite(value) else -math.inf


def best_completion(row: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The chosen completion of a row and its score; raises :class:`RowError` when none qualifies."""
    completions = row.get("completions")
    if not isinstance(completions, list):
        raise RowError("malformed_row: completions is not a list")
    if not completions:
        raise RowError("no_completions")
    if not all(isinstance(c, dict) for c in completions):
        raise RowError("malformed_row: a completion is not an object")
    scored = [(completion_score(c), position, c) for position, c in enumerate(completions)]
    scored = [(score, position, c) for score, position, c in scored if score is not None]
    if not scored:
        raise RowError("no_valid_rating")
    usable = [(s, p, c) for s, p, c in scored if isinstance(c.get("response"), str) and c["response"].strip()]
    if not usable:
        raise RowError("empty_responses")
    score, _, chosen = max(usable, key=lambda item: (item[0], _overall(item[2]), -item[1]))
    return chosen, score


def convert_row(row: dict[str, Any]) -> dict[str, Any]:
    """One UltraFeedback row -> one alpaca record (raises :class:`RowError`)."""
    instruction = row.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise RowError("empty_instruction")
    chosen, score = best_completion(row)
    return {
        "instruction": instruction,
        "output": chosen["response"],
        "source": row.get("source"),
        "score": score,
        "model": chosen.get("model"),
    }


def _score_histogram(records: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(f"{record['score']:.2f}" for record in records)
    return dict(sorted(counts.items(), key=lambda item: float(item[0])))


def convert_ultrafeedback(input: str, out: str | Path, num_prompts: int = 10000, seed: int = 42,
                          split: str = "train") -> dict[str, Any]:
    """Convert UltraFeedback at ``input`` (file, directory or HF id) into ``out``; returns the stats.

    ``num_prompts`` <= 0 keeps every valid row. Sampling uses ``random.Random(seed)`` over the
    valid rows in source order, and the kept records stay in source order.
    """
    stats = ConversionStats()
    rows, total = open_rows(input, split=split)
    valid = convert_rows(rows, total, "ultrafeedback", convert_row, stats)
    if not valid:
        raise UserError(f"{input}: no usable UltraFeedback rows (skipped: {dict(stats.skipped)}); "
                        "expected rows with instruction and rated completions[]")
    if 0 < num_prompts < len(valid):
        chosen = sorted(random.Random(seed).sample(range(len(valid)), num_prompts))
        records = [valid[i] for i in chosen]
    else:
        records = valid
    stats.kept = len(records)
    result = stats.to_dict()
    result.update(valid=len(valid), not_sampled=len(valid) - len(records), num_prompts=num_prompts,
                  seed=seed, score_histogram=_score_histogram(records))
    write_outputs(Path(out), FILE_NAME, records, {DATASET_NAME: DATASET_INFO_ENTRY}, result)
    return result


def _cli(args) -> int:
    stats = convert_ultrafeedback(args.input, args.out, num_prompts=args.num_prompts, seed=args.seed, split=args.split)
    print_stats("ultrafeedback", stats)
    print(f"  valid {stats['valid']}, sampled {stats['kept']} (seed {stats['seed']}) -> {Path(args.out) / FILE_NAME}")
    return 0


def register(data_subparsers) -> None:
    """Add ``data ultrafeedback`` to the ``data`` sub-verb parsers."""
    parser = data_subparsers.add_parser(
        "ultrafeedback", help="UltraFeedback -> best-response SFT data (alpaca JSONL)",
        description="Keep each prompt's best-rated response, sample --num-prompts of them.")
    add_io_arguments(parser, "openbmb/UltraFeedback")
    parser.add_argument("--num-prompts", type=int, default=10000, help="prompts to sample (<= 0: all valid rows)")
    parser.add_argument("--seed", type=int, default=42, help="sampling seed")
    parser.set_defaults(handler=_cli)
