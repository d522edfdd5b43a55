"""Resolve ``--data FILE_OR_DATASET`` to a LLaMA-Factory dataset name and ``dataset_dir``.

A dataset name is looked up in ``DATASET_DIR/dataset_info.json`` exactly as
``llamafactory-cli train`` does. A JSON / JSONL file is described by a one-entry
``dataset_info.json`` written to a work folder; its format is read from its first record:

* alpaca: ``instruction`` / ``input`` / ``output`` (optional ``system``, ``history``, ``images``);
* sharegpt: ``conversations`` with ``from`` / ``value`` turns (``human`` / ``gpt``, or
  ``user`` / ``assistant``), or ``messages`` with ``role`` / ``content`` turns (OpenAI style);
  optional ``system``, ``tools``, ``images``, ``videos``.

Relative media paths resolve against the data file's folder (LLaMA-Factory's ``media_dir``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dft_mm import durable
from dft_mm.errors import UserError

FILE_DATASET_NAME = "dft_mm_analysis_data"
MEDIA_COLUMNS = ("images", "videos", "audios")


@dataclass(frozen=True)
class DatasetSpec:
    """What LLaMA-Factory's data arguments need: ``dataset``, ``dataset_dir``, ``media_dir``."""

    dataset: str
    dataset_dir: str
    media_dir: str | None = None


def _first_record(path: Path) -> dict:
    """First record of a JSON array or JSONL file."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
            if not records:
                raise UserError(f"{path}: the JSON array is empty; nothing to analyse.")
            record = records[0]
        else:
            line = next((line for line in stripped.splitlines() if line.strip()), None)
            if line is None:
                raise UserError(f"{path}: the file is empty; nothing to analyse.")
            record = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON / JSONL ({err}); give a JSON array or one JSON object per line.")
    if not isinstance(record, dict):
        raise UserError(f"{path}: record 1 is a {type(record).__name__}, expected a JSON object.")
    return record


def _sharegpt_entry(record: dict, key: str, path: Path) -> dict:
    turns = record[key]
    if not isinstance(turns, list) or not turns or not isinstance(turns[0], dict):
        raise UserError(f"{path}: record 1 key '{key}' must be a non-empty list of turn objects.")
    if key == "messages" or "role" in turns[0]:
        tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                "assistant_tag": "assistant", "system_tag": "system"}
    else:
        roles = {turn.get("from") for turn in turns}
        user, assistant = ("user", "assistant") if "user" in roles or "assistant" in roles else ("human", "gpt")
        tags = {"role_tag": "from", "content_tag": "value", "user_tag": user, "assistant_tag": assistant}
    columns = {"messages": key}
    columns.update({name: name for name in ("system", "tools", *MEDIA_COLUMNS) if name in record})
    return {"formatting": "sharegpt", "columns": columns, "tags": tags}


def describe_file(path: Path) -> dict:
    """The ``dataset_info.json`` entry (without ``file_name``) for a JSON / JSONL data file."""
    record = _first_record(path)
    for key in ("conversations", "messages"):
        if key in record:
            return _sharegpt_entry(record, key, path)
    if "instruction" in record and "output" in record:
        columns = {"prompt": "instruction", "query": "input", "response": "output"}
        columns.update({name: name for name in ("system", "history", *MEDIA_COLUMNS) if name in record})
        return {"formatting": "alpaca", "columns": columns}
    raise UserError(
        f"{path}: cannot tell the data format from record 1 (keys {sorted(record)}). Expected alpaca "
        "('instruction', 'output') or sharegpt ('conversations' or 'messages'); or register the file in a "
        "dataset_info.json and pass --data NAME --dataset-dir DIR."
    )


def resolve_dataset(data: str, dataset_dir: str | None, work_dir: Path) -> DatasetSpec:
    """Turn ``--data`` / ``--dataset-dir`` into a :class:`DatasetSpec` (writes into ``work_dir``)."""
    path = Path(data)
    if path.is_file():
        entry = {"file_name": str(path.resolve()), **describe_file(path)}
        work_dir.mkdir(parents=True, exist_ok=True)
        durable.write_json(work_dir / "dataset_info.json", {FILE_DATASET_NAME: entry}, ensure_ascii=True,
                           final_newline=False)
        return DatasetSpec(FILE_DATASET_NAME, str(work_dir), str(path.resolve().parent))
    if dataset_dir is None:
        raise UserError(f"--data {data}: no such file; to use a dataset name, also pass --dataset-dir DIR "
                        "(the folder holding dataset_info.json).")
    info_path = Path(dataset_dir) / "dataset_info.json"
    if not info_path.is_file():
        raise UserError(f"{info_path} not found; --dataset-dir must be the folder holding dataset_info.json.")
    try:
        names = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{info_path}: not valid JSON ({err}).")
    undefined = [name.strip() for name in data.split(",") if name.strip() not in names]  # "a,b" as in recipes
    if undefined:
        raise UserError(f"dataset {', '.join(undefined)} not defined in {info_path}; defined: {', '.join(sorted(names))}.")
    return DatasetSpec(data, str(Path(dataset_dir).resolve()))
