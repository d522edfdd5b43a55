"""Reading source rows and writing converted datasets, shared by the converters.

Sources are local ``.json`` (an array of objects, or JSON lines), ``.jsonl``, ``.parquet``
files, a directory of such files, or a Hugging Face dataset id read through
``datasets.load_dataset``. Rows stream one at a time; a line that is not a JSON object is
reported as malformed (``data is None``) instead of stopping the run.

Outputs are written through :mod:`dft_mm.durable` (a temporary file renamed when complete), so an
interrupted run never leaves a half-written dataset behind.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dft_mm import durable
from dft_mm.errors import UserError

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
EXAMPLES_PER_REASON = 5


class RowError(ValueError):
    """A source row that cannot be converted; ``reason`` is the stats key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Row:
    """One source row: ``where`` locates it (``file:line`` or ``hf-id[index]``) for messages;
    ``data`` is the parsed object, or ``None`` when the row could not be parsed (``error`` says why)."""

    where: str
    data: dict[str, Any] | None
    error: str = ""


@dataclass
class ConversionStats:
    """Counts of read, kept and skipped rows, with the first few locations of each skip reason,
    and ``notes``: counts of kept rows that needed a fix-up."""

    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)

    def skip(self, reason: str, where: str) -> None:
        """Record that the row at ``where`` was dropped for ``reason``."""
        self.skipped[reason] += 1
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(where)

    def skip_unparsed(self, row: Row) -> None:
        """Record a row that could not be parsed (``row.data is None``)."""
        self.skip(f"malformed_row: {row.error.split(':')[0]}", row.where)

    def note(self, what: str) -> None:
        """Count a kept row that needed a fix-up (``what`` names it)."""
        self.notes[what] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": self.kept,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_examples": dict(sorted(self.skipped_examples.items())),
            "notes": dict(sorted(self.notes.items())),
        }


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)
        if not files:
            raise UserError(f"{path}: no {', '.join(LOCAL_SUFFIXES)} files in this directory")
        return files
    if path.suffix not in LOCAL_SUFFIXES:
        raise UserError(f"{path}: unsupported file type {path.suffix!r}; give a {', '.join(LOCAL_SUFFIXES)} file, "
                        "a directory of them, or a Hugging Face dataset id")
    return [path]


def _as_row(where: str, obj: Any) -> Row:
    if isinstance(obj, dict):
        return Row(where, obj)
    return Row(where, None, f"expected a JSON object, got {type(obj).__name__}")


def _iter_json_lines(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield _as_row(f"{path}:{number}", json.loads(line))
            except json.JSONDecodeError as err:
                yield Row(f"{path}:{number}", None, f"invalid JSON: {err.msg}")


def _iter_json(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as handle:
        head = handle.read(1024).lstrip()
    if not head.startswith("["):  # JSON lines saved with a .json suffix
        yield from _iter_json_lines(path)
        return
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
    for index, obj in enumerate(rows):
        yield _as_row(f"{path}[{index}]", obj)


def _iter_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for obj in batch.to_pylist():
            yield _as_row(f"{path}[{index}]", obj)
            index += 1


def _count_local(path: Path) -> int | None:
    """Row count for the progress bar when it is cheap to get."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix == ".jsonl":
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    return None


def _load_hub(dataset_id: str, split: str):
    try:
        from datasets import load_dataset

        return load_dataset(dataset_id, split=split)
    except Exception as err:  # network, auth, unknown id: all fixable by the user
        raise UserError(f"could not load Hugging Face dataset {dataset_id!r} (split {split!r}): {err}. "
                        "Check the id and network access, or pass a local .json/.jsonl/.parquet file") from err


def open_rows(source: str, split: str = "train") -> tuple[Iterable[Row], int | None]:
    """Rows of ``source`` (local path or HF dataset id) and their total count when known.

    A string that is not an existing path but looks like ``owner/name`` is read with
    ``datasets.load_dataset(source, split=split)``.
    """
    path = Path(source).expanduser()
    if path.exists():
        files = _local_files(path)
        counts = [_count_local(f) for f in files]
        total = None if None in counts else sum(counts)

        def rows() -> Iterator[Row]:
            for file in files:
                yield from (_iter_parquet(file) if file.suffix == ".parquet"
                            else _iter_json_lines(file) if file.suffix == ".jsonl" else _iter_json(file))

        return rows(), total
    if source.count("/") != 1 or source.startswith((".", "/", "~")) or path.suffix in LOCAL_SUFFIXES:
        raise UserError(f"{source}: no such file or directory (and not a Hugging Face dataset id like owner/name)")
    dataset = _load_hub(source, split)
    return (_as_row(f"{source}[{i}]", obj) for i, obj in enumerate(dataset)), len(dataset)


def convert_rows(rows: Iterable[Row], total: int | None, desc: str, convert: Callable[[dict[str, Any]], dict[str, Any]],
                 stats: ConversionStats, limit: int | None = None) -> list[dict[str, Any]]:
    """``convert`` every row under a tqdm bar; rows that fail to parse or raise :class:`RowError`
    are counted in ``stats`` (never raised). Stops after ``limit`` converted rows when given."""
    records: list[dict[str, Any]] = []
    with tqdm(rows, total=total, desc=desc, unit="row") as progress:
        for row in progress:
            if limit is not None and len(records) >= limit:
                break
            stats.read += 1
            if row.data is None:
                stats.skip_unparsed(row)
                continue
            try:
                records.append(convert(row.data))
            except RowError as err:
                stats.skip(err.reason, row.where)
    return records


def write_outputs(out_dir: Path, file_name: str, records: Iterable[dict[str, Any]],
                  dataset_info: dict[str, Any], stats: dict[str, Any]) -> Path:
    """Write the dataset, its ``dataset_info.json`` and ``stats.json`` into ``out_dir``.

    Returns the dataset path. ``dataset_info`` maps dataset names to LLaMA-Factory entries whose
    ``file_name`` is relative to ``out_dir``, so ``dataset_dir: <out_dir>`` works directly.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = out_dir / file_name
    durable.write_jsonl(data_path, records)
    durable.write_json(out_dir / "dataset_info.json", dataset_info)
    durable.write_json(out_dir / "stats.json", stats)
    return data_path


def add_io_arguments(parser, hub_id: str) -> None:
    """The ``--input``/``--out``/``--split`` options every converter takes (``hub_id`` for the help)."""
    parser.add_argument("--input", required=True,
                        help=f"local .json/.jsonl/.parquet file or directory, or an HF dataset id ({hub_id})")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--split", default="train", help="split when --input is an HF dataset id")


def print_stats(title: str, stats: dict[str, Any]) -> None:
    """Human-readable summary of a conversion on stdout."""
    print(f"{title}: read {stats['read']}, kept {stats['kept']}")
    for reason, count in stats["skipped"].items():
        print(f"  skipped {count:>7}  {reason}  (e.g. {', '.join(stats['skipped_examples'][reason][:2])})")
    for what, count in stats["notes"].items():
        print(f"  note    {count:>7}  {what}")
