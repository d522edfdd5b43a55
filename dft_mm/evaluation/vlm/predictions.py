"""Prediction files in VLMEvalKit's format: the dataset's columns minus ``image``, plus
``prediction``; named ``<model>_<dataset>.tsv`` (VLMEvalKit's ``PRED_FORMAT=tsv`` name).

Beside it, ``<model>_<dataset>.generation.json`` records how the file was generated
(``model``, ``system_prompt``, pixel bounds, ``max_new_tokens``); a rerun with other settings is
refused, so one file never mixes prompts, and the scorers copy ``system_prompt`` into the
scores.

Writing is append + flush per record, every field quoted (as VLMEvalKit's ``dump`` does), so
an interrupted run keeps everything it finished; a rerun reads the finished ``index`` values
and skips them. A record cut short by a crash is dropped (and counted) on resume.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from dft_mm.errors import UserError

csv.field_size_limit(sys.maxsize)


def prediction_filename(model_name: str, dataset_name: str) -> str:
    """VLMEvalKit's prediction file name (with ``PRED_FORMAT=tsv``)."""
    return f"{model_name}_{dataset_name}.tsv"


def generation_record_path(predictions: str | Path) -> Path:
    """``<model>_<dataset>.generation.json`` beside a prediction file."""
    predictions = Path(predictions)
    return predictions.with_name(f"{predictions.stem}.generation.json")


def read_generation_record(predictions: str | Path) -> dict | None:
    """The generation settings recorded beside ``predictions``, or None (e.g. VLMEvalKit's own file)."""
    import json

    path = generation_record_path(predictions)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_generation_record(predictions: str | Path, record: dict) -> None:
    """Write ``record`` beside ``predictions``; refuse when an earlier run recorded other settings."""
    from dft_mm.durable import write_json

    previous = read_generation_record(predictions)
    if previous is not None and previous != record:
        changed = sorted(key for key in {*previous, *record} if previous.get(key) != record.get(key))
        raise UserError(f"{predictions} was generated with other settings ({', '.join(changed)} differ, see "
                        f"{generation_record_path(predictions)}); use another --out or remove both files to regenerate")
    write_json(generation_record_path(predictions), record)


def prediction_columns(dataset_columns: list[str]) -> list[str]:
    """The dataset's columns without ``image``, then ``prediction``."""
    return [column for column in dataset_columns if column not in ("image", "prediction")] + ["prediction"]


class PredictionWriter:
    """Append-only TSV writer that resumes: ``done`` holds the ``index`` values already written."""

    def __init__(self, path: str | Path, columns: list[str]):
        self.path = Path(path)
        self.columns = columns
        self.done: set[str] = set()
        self.dropped_partial = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._resume()
        else:
            with open(self.path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL).writerow(columns)

    def _resume(self) -> None:
        with open(self.path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader, [])
            records = list(reader)
        if header != self.columns:
            raise UserError(f"{self.path} exists with columns {header}, expected {self.columns}: it belongs to "
                            "another dataset or format; move it away or choose another --out")
        complete = [record for record in records if len(record) == len(header)]
        self.dropped_partial = len(records) - len(complete)
        if self.dropped_partial:
            with open(self.path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL)
                writer.writerow(header)
                writer.writerows(complete)
        position = header.index("index")
        self.done = {record[position] for record in complete}

    def write(self, row: dict, prediction: str) -> None:
        """Append one record (``row``'s columns + ``prediction``) and flush it to disk."""
        values = {**row, "prediction": prediction}
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL).writerow(
                ["" if values.get(column) is None else values[column] for column in self.columns]
            )
            handle.flush()
        self.done.add(row["index"])


def load_predictions(path: str | Path) -> list[dict]:
    """Rows of our prediction TSVs or VLMEvalKit's ``.xlsx`` / ``.tsv`` prediction files."""
    from dft_mm.evaluation.vlm.datasets import frame_rows, read_table

    path = Path(path)
    if not path.is_file():
        raise UserError(f"predictions file {path} not found; run `dft-mm eval vlm generate` first "
                        "or pass VLMEvalKit's <model>_<dataset>.xlsx")
    frame = read_table(path)
    missing = [column for column in ("index", "answer", "prediction") if column not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; a prediction file has the dataset's "
                        "columns plus 'prediction'")
    return frame_rows(frame)
