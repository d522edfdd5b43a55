"""Append-only JSONL files that survive being killed mid-write (code samples and executions,
VLM extraction caches).

A kill can leave a partial last line; :func:`open_for_append` drops it (so the next record starts
on a fresh line) and :func:`complete_records` reads every complete record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO


def complete_records(path: Path) -> list[dict]:
    """Every parseable line of ``path`` (a line cut short by a kill is skipped: its work is redone)."""
    records = []
    if path.is_file():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records


def open_for_append(path: Path) -> IO[str]:
    """Open ``path`` for appending after dropping a partial last line left by a killed run."""
    if path.is_file() and path.stat().st_size:
        raw = path.read_bytes()
        if not raw.endswith(b"\n"):
            path.write_bytes(raw[: raw.rfind(b"\n") + 1])
    return open(path, "a", encoding="utf-8")


def append(handle: IO[str], record: dict) -> None:
    """Write one record and flush it, so finished work is on disk before the next one starts."""
    handle.write(json.dumps(record) + "\n")
    handle.flush()
