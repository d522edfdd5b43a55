"""Score a prediction file: extract each answer, mark hits, compute the benchmark metrics.

Inputs: our ``<model>_<dataset>.tsv`` or VLMEvalKit's ``<model>_<dataset>.xlsx`` / ``.tsv``
(the dataset's columns plus ``prediction``; no images needed). Outputs in ``out``:

- ``<dataset>_scored.tsv``: every row with ``extracted``, ``extract_method`` and ``hit``;
- ``<dataset>_score.json``: the metrics (percent, 0-100) at the top level, plus ``details``
  (row counts, rows skipped and why, extraction methods, raw hit counts);
- ``<dataset>_score.csv``: ``metric,value,count,total``;
- ``<dataset>_extract.jsonl``: the extraction cache (append + flush per row), so a rerun,
  e.g. after a judge outage, only redoes rows whose prediction or judge changed.

Example::

    score_predictions("MathVision_MINI", "out/Qwen2.5-VL-3B_MathVision_MINI.tsv", "out/")
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from dft_mm.evaluation.resumable import append, complete_records, open_for_append
from dft_mm.evaluation.vlm.datasets import MATHVERSE, WEMATH, spec_for
from dft_mm.evaluation.vlm.extract import Extraction, extract_answer

# Extraction rules weak enough that a configured judge is asked instead.
JUDGE_WHEN = ("none", "ambiguous", "last_expression", "whole")


class ExtractionCache:
    """JSONL records ``{index, prediction, judge, extracted, method}``; reused only when the
    prediction and the judge (URL and model) are unchanged."""

    def __init__(self, path: Path):
        self.path = path
        # a line cut short by an interrupted run is dropped (and that row redone)
        self.records: dict[str, dict] = {record["index"]: record for record in complete_records(path)}
        open_for_append(path).close()

    def get(self, index: str, prediction: str | None, judge: str | None) -> Extraction | None:
        record = self.records.get(index)
        if record and record["prediction"] == prediction and record["judge"] == judge:
            return Extraction(record["extracted"], record["method"])
        return None

    def put(self, index: str, prediction: str | None, judge: str | None, extraction: Extraction) -> None:
        record = {"index": index, "prediction": prediction, "judge": judge,
                  "extracted": extraction.answer, "method": extraction.method}
        self.records[index] = record
        with open(self.path, "a", encoding="utf-8") as handle:
            append(handle, record)


def _question_text(row: dict) -> str:
    return str(row.get("question_for_eval") or row.get("question") or "")


def _metrics(benchmark: str, rows: list[dict]):
    from dft_mm.evaluation.vlm.metrics import mathverse_metrics, mathvision_metrics, wemath_metrics

    if benchmark == MATHVERSE:
        return mathverse_metrics(rows)
    if benchmark == WEMATH:
        return wemath_metrics(rows)
    return mathvision_metrics(rows)


def _write_scored(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(column) is None else row[column] for column in columns])


def _write_score_csv(path: Path, metrics: dict[str, float | None], counts: dict) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric", "value", "count", "total"])
        for name, value in metrics.items():
            count = counts.get(name)
            hit, total = (count if isinstance(count, list) else [count, ""]) if count is not None else ["", ""]
            writer.writerow([name, "" if value is None else f"{value:.2f}", hit, total])


def _judge_replies(client, todo: list[tuple[dict, dict | None]], workers: int):
    """Yield ``(row, options, raw reply)`` as the judge answers, ``workers`` requests at a time;
    on a failure the pending requests are cancelled and the error raised."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(client.complete, client.prompt(_question_text(row), str(row.get("prediction")), options)):
                   (row, options) for row, options in todo}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="judge", unit="row"):
                yield (*futures[future], future.result())
        finally:
            for future in futures:
                future.cancel()


def score_predictions(
    dataset: str,
    predictions: str | Path,
    out: str | Path,
    *,
    judge: str | None = None,
    judge_model: str = "judge",
    judge_workers: int = 8,
) -> dict:
    """Score ``predictions`` with ``dataset``'s semantics; returns the score JSON as a dict.

    Rule extraction runs first; the rows it leaves unsettled go to the judge (when given),
    ``judge_workers`` requests at a time.
    """
    from tqdm import tqdm

    from dft_mm.evaluation.vlm.compare import is_hit
    from dft_mm.evaluation.vlm.judge import Judge, interpret
    from dft_mm.evaluation.vlm.predictions import load_predictions
    from dft_mm.evaluation.vlm.prompts import answer_options

    spec = spec_for(dataset)
    rows = load_predictions(predictions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = ExtractionCache(out / f"{spec.name}_extract.jsonl")
    client = Judge(judge, model=judge_model) if judge else None
    judge_key = f"{client.url} {judge_model}" if client else None  # cached rows are reused for this judge only
    skipped = Counter()
    gradable = []
    for row in rows:
        if row.get("answer") is None:
            skipped["no gold answer"] += 1
        else:
            gradable.append((row, answer_options(row, spec)))
    extractions: dict[str, Extraction] = {}
    todo = []
    for row, options in tqdm(gradable, desc=f"extract {spec.name}", unit="row"):
        cached = cache.get(row["index"], row.get("prediction"), judge_key)
        if cached is not None:
            extractions[row["index"]] = cached
            continue
        extraction = extract_answer(row.get("prediction"), options)
        if client is not None and extraction.method in JUDGE_WHEN:
            todo.append((row, options))
        else:
            extractions[row["index"]] = extraction
            cache.put(row["index"], row.get("prediction"), judge_key, extraction)
    for row, options, reply in _judge_replies(client, todo, judge_workers) if todo else ():
        answer = interpret(reply, options)
        extraction = Extraction(answer, "judge" if answer is not None else "judge_none")
        extractions[row["index"]] = extraction
        cache.put(row["index"], row.get("prediction"), judge_key, extraction)  # kept even if a later request fails
    scored, methods = [], Counter()
    for row, options in tqdm(gradable, desc=f"score {spec.name}", unit="row"):
        extraction = extractions[row["index"]]
        methods[extraction.method] += 1
        hit = is_hit(extraction.answer, row["answer"], options)
        scored.append({**row, "extracted": extraction.answer, "extract_method": extraction.method, "hit": int(hit)})
    if not scored:
        from dft_mm.errors import UserError

        raise UserError(f"{predictions}: no row could be scored ({dict(skipped)}); check the file's 'answer' column")
    metrics, counts = _metrics(spec.benchmark, scored)
    result = {name: None if value is None else round(value, 4) for name, value in metrics.items()}
    result["details"] = {
        "dataset": spec.name, "benchmark": spec.benchmark, "predictions": str(predictions),
        "rows": len(rows), "scored": len(scored), "skipped": dict(skipped),
        "extraction": dict(sorted(methods.items())), "counts": counts, "judge": judge_key,
    }
    _write_scored(out / f"{spec.name}_scored.tsv", scored)
    _write_score_csv(out / f"{spec.name}_score.csv", metrics, counts)
    (out / f"{spec.name}_score.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result
