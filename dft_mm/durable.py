"""Files that survive the writing process being killed: one place for every layer (stdlib only).

"Durable" here means *safe against the writer dying at any instant* (SIGKILL, Ctrl-C, an
exception, the machine's OOM killer), in two shapes:

* Whole files (scores, results, tables, converted datasets) are written to a temporary file in
  the same directory and renamed over the target with :func:`os.replace`, so a reader (or a rerun)
  sees either the previous complete file or the new complete file, never a truncated one. A write
  that raises removes its temporary file; a writer killed mid-write leaves the target untouched and
  at most one hidden ``.<name>.<random>.tmp`` beside it. The new file gets the default mode
  (``0o666`` minus the umask) and replaces a symlink rather than writing through it.
* Append logs (resumable generation and execution caches): one JSON record per line, each flushed
  as soon as its work is finished. A kill can only tear the line being written: :func:`complete_records`
  reads every line that parses as JSON and skips any that does not (so a torn last line's work is
  redone), and :func:`open_for_append` cuts an unparseable tail after the last newline before
  appending, so the next record starts on a line of its own (a tail that is a whole record short
  only of its newline is kept and terminated instead).

Nothing here calls ``fsync``: the guarantees hold for a killed process, not for a power cut or a
kernel crash, where the last writes may be lost (recent whole files may come back empty on some
filesystems).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def open_atomic(path: str | Path, mode: str = "w", *, newline: str | None = None) -> Iterator[IO]:
    """A handle on a temporary file that replaces ``path`` when the block ends without error.

    ``mode`` is ``"w"`` (UTF-8 text; ``newline`` as for :func:`open`) or ``"wb"``. The parent
    directory is created when missing. If the block raises, ``path`` is left as it was and the
    temporary file is removed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"open_atomic: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    exclusive = mode.replace("w", "x")  # a fresh name: never writes into another writer's file
    handle = open(tmp, exclusive) if "b" in mode else open(tmp, exclusive, encoding="utf-8", newline=newline)
    try:
        with handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str, *, newline: str | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``newline`` as for :func:`open`."""
    with open_atomic(path, newline=newline) as handle:
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with open_atomic(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2, ensure_ascii: bool = False,
               final_newline: bool = True) -> None:
    """Write ``obj`` as JSON to ``path`` atomically.

    The defaults (indent 2, UTF-8 characters as they are, a final newline) are the datasets' and
    VLM scores' format; the code-eval result files keep EvalPlus/MultiPL-E's own spelling
    (``ensure_ascii=True, final_newline=False``, and ``indent=None`` for ``eval_results.json``).
    The JSON is built before anything is written, so an object that cannot be serialised raises
    without touching ``path``.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii)
    write_text(path, text + "\n" if final_newline else text)


def write_jsonl(path: str | Path, records: Iterable[Any], *, ensure_ascii: bool = False) -> int:
    """Write ``records`` as JSON lines to ``path`` atomically; returns how many were written.

    ``records`` is consumed once, as it streams; if it (or serialising a record) raises, ``path`` is
    left as it was.
    """
    count = 0
    with open_atomic(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=ensure_ascii) + "\n")
            count += 1
    return count


def complete_records(path: str | Path) -> list:
    """Every line of the append log ``path`` that parses as JSON, in order ([] when there is no file).

    A line that does not parse (the torn last line of a killed run) is skipped, so its work is redone.
    """
    records = []
    path = Path(path)
    if path.is_file():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records


def open_for_append(path: str | Path) -> IO[str]:
    """Open the append log ``path`` (created when missing) for :func:`append`.

    Whatever follows the last newline was being written when a run was killed: when it does not
    parse as JSON it is cut off (in place, by truncation, so no finished record is ever at risk);
    when it does, only its newline was lost, and the newline is added.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size:
        raw = path.read_bytes()
        if not raw.endswith(b"\n"):
            keep = raw.rfind(b"\n") + 1
            try:
                json.loads(raw[keep:])
            except ValueError:  # JSONDecodeError, or UnicodeDecodeError for a cut multi-byte character
                os.truncate(path, keep)
            else:
                with open(path, "ab") as handle:
                    handle.write(b"\n")
    return open(path, "a", encoding="utf-8")


def append(handle: IO[str], record: Any) -> None:
    """Write one record as a JSON line and flush it, so finished work is on disk before the next starts."""
    handle.write(json.dumps(record) + "\n")
    handle.flush()
