"""Score a prediction file, two ways:

- ``judge=URL`` (the paper's metric): VLMEvalKit's own evaluation with that judge
  (:mod:`dft_mm.evaluation.vlm.kit.score`); ``"scorer": "vlmevalkit"``;
- no judge: a fast, deterministic proxy, ``"scorer": "judge-free"``: rule extraction +
  ``math-verify``. Not the paper's metric: its numbers go to the proxy table only.

Inputs: our ``<model>_<dataset>.tsv`` or VLMEvalKit's ``<model>_<dataset>.xlsx`` / ``.tsv``
(the dataset's columns plus ``prediction``; no images needed). Outputs in ``out``:

- ``<dataset>_score.json``: the metrics (percent, 0-100) at the top level, ``scorer``,
  ``judge`` (null for the proxy), ``system_prompt`` (from the generation record beside the
  predictions, null when unknown), plus ``details``;
- ``<dataset>_score.csv``: ``metric,value,count,total``;
- judge-free only: ``<dataset>_scored.tsv`` (every row with ``extracted``,
  ``extract_method``, ``hit``) and ``<dataset>_extract.jsonl``, the extraction cache (append +
  flush per row; a rerun redoes only rows whose prediction changed);
- judged only: ``vlmevalkit/``, the kit's own per-row and score files.

Example::

    score("MathVision", "out/dft_MathVision.tsv", "out/")                       # proxy
    score("MathVision", "out/dft_MathVision.tsv", "out/", judge="http://127.0.0.1:8000/v1",
          judge_model="Qwen2.5-72B-Instruct")                                   # the kit's
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from dft_mm.durable import append, complete_records, open_for_append, write_json
from dft_mm.evaluation.vlm.datasets import MATHVERSE, WEMATH, spec_for
from dft_mm.evaluation.vlm.extract import Extraction, extract_answer

JUDGE_FREE = "judge-free"
# keys of a score JSON that are not metrics
RECORD_KEYS = ("scorer", "judge", "judge_url", "system_prompt", "details")


class ExtractionCache:
    """JSONL records ``{index, prediction, extracted, method}``; reused while the prediction is unchanged."""

    def __init__(self, path: Path):
        self.path = path
        # a line cut short by an interrupted run is dropped (and that row redone)
        self.records: dict[str, dict] = {record["index"]: record for record in complete_records(path)}
        open_for_append(path).close()

    def get(self, index: str, prediction: str | None) -> Extraction | None:
        record = self.records.get(index)
        if record and record["prediction"] == prediction:
            return Extraction(record["extracted"], record["method"])
        return None

    def put(self, index: str, prediction: str | None, extraction: Extraction) -> None:
        record = {"index": index, "prediction": prediction, "extracted": extraction.answer, "method": extraction.method}
        self.records[index] = record
        with open(self.path, "a", encoding="utf-8") as handle:
            append(handle, record)


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


def _write_outputs(out: Path, dataset: str, result: dict, counts: dict) -> None:
    metrics = {key: value for key, value in result.items() if key not in RECORD_KEYS}
    _write_score_csv(out / f"{dataset}_score.csv", metrics, counts)
    write_json(out / f"{dataset}_score.json", result)


def score(
    dataset: str,
    predictions: str | Path,
    out: str | Path,
    *,
    judge: str | None = None,
    judge_model: str | None = None,
    judge_workers: int = 8,
    kit_python: str | None = None,
) -> dict:
    """Score ``predictions`` with ``dataset``'s semantics; returns the score JSON as a dict.

    ``judge``: an OpenAI-compatible endpoint (``http://HOST:PORT/v1``) serving ``judge_model``;
    VLMEvalKit then scores with it, ``judge_workers`` requests at a time (its ``nproc``).
    Without it the judge-free proxy scores.
    """
    from dft_mm.evaluation.vlm.predictions import read_generation_record

    spec = spec_for(dataset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = read_generation_record(predictions) or {}
    if judge:
        from dft_mm.evaluation.vlm.kit.score import score_with_kit

        result = score_with_kit(spec, Path(predictions), out, judge_url=judge, judge_model=judge_model,
                                workers=judge_workers, kit_python=kit_python)
        result = {**result, "system_prompt": record.get("system_prompt")}
        _write_outputs(out, spec.name, result, {})
        return result
    return _score_judge_free(spec, predictions, out, record.get("system_prompt"))


def _score_judge_free(spec, predictions: str | Path, out: Path, system_prompt: str | None) -> dict:
    """Rule extraction + math-verify comparison for every row (see the module docstring)."""
    from tqdm import tqdm

    from dft_mm.evaluation.vlm.compare import is_hit
    from dft_mm.evaluation.vlm.predictions import load_predictions
    from dft_mm.evaluation.vlm.prompts import answer_options

    rows = load_predictions(predictions)
    cache = ExtractionCache(out / f"{spec.name}_extract.jsonl")
    skipped = Counter()
    scored, methods = [], Counter()
    for row in tqdm(rows, desc=f"score {spec.name}", unit="row"):
        if row.get("answer") is None:
            skipped["no gold answer"] += 1
            continue
        options = answer_options(row, spec)
        extraction = cache.get(row["index"], row.get("prediction"))
        if extraction is None:
            extraction = extract_answer(row.get("prediction"), options)
            cache.put(row["index"], row.get("prediction"), extraction)
        methods[extraction.method] += 1
        hit = is_hit(extraction.answer, row["answer"], options)
        scored.append({**row, "extracted": extraction.answer, "extract_method": extraction.method, "hit": int(hit)})
    if not scored:
        from dft_mm.errors import UserError

        raise UserError(f"{predictions}: no row could be scored ({dict(skipped)}); check the file's 'answer' column")
    metrics, counts = _metrics(spec.benchmark, scored)
    result = {name: None if value is None else round(value, 4) for name, value in metrics.items()}
    result.update({"scorer": JUDGE_FREE, "judge": None, "system_prompt": system_prompt})
    result["details"] = {
        "dataset": spec.name, "benchmark": spec.benchmark, "predictions": str(predictions),
        "rows": len(rows), "scored": len(scored), "skipped": dict(skipped),
        "extraction": dict(sorted(methods.items())), "counts": counts,
    }
    _write_scored(out / f"{spec.name}_scored.tsv", scored)
    _write_outputs(out, spec.name, result, counts)
    return result
