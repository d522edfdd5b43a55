"""Results tables in the paper's column order, with deltas against a baseline row.

Cells are text as in the CSVs (percent, 0-100); an empty or absent cell is *missing* and is
shown as :data:`MISSING`, never as zero. Columns a CSV has beyond the paper's are kept,
after the paper's ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dft_mm.analysis.runs import Run, Table, read_table
from dft_mm.evaluation.code.table import COLUMNS as CODE_TABLE_COLUMNS
from dft_mm.evaluation.vlm.table import TABLE_COLUMNS as VLM_TABLE_COLUMNS

MISSING = "—"
# The metric columns, in the paper's order, exactly as `dft-mm eval code|vlm run` write them.
CODE_COLUMNS = tuple(c for c in CODE_TABLE_COLUMNS if c != "model")
VLM_COLUMNS = tuple(c for c in VLM_TABLE_COLUMNS if c != "model")
PAPER_COLUMNS = {"code_table": CODE_COLUMNS, "vlm_table": VLM_COLUMNS}
REFERENCE_FILES = {"code_table": "code.csv", "vlm_table": "vlm.csv"}
NON_METRIC = ("model", "source", "scorer")


def number(text: str | None) -> float | None:
    """The float in a cell, or ``None`` when the cell is empty, absent or not a number."""
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def cell(text: str | None, baseline: str | None = None, show_delta: bool = False) -> str:
    """Format a cell: ``67.70 (+5.50)`` with a delta, ``67.70`` without, :data:`MISSING` if empty."""
    value = number(text)
    if value is None:
        return MISSING if text in (None, "") else str(text)
    shown = f"{value:.2f}"
    base = number(baseline)
    if show_delta and base is not None:
        shown += f" ({value - base:+.2f})"
    return shown


def column_order(kind: str, tables) -> list[str]:
    """The paper's columns for ``kind``, then any extra metric columns the tables carry."""
    columns = list(PAPER_COLUMNS[kind])
    for table in tables:
        columns += [c for c in table.columns if c not in columns and c not in NON_METRIC]
    return columns


def run_rows(kind: str, runs: list[Run], keep: Callable[[Table, dict], bool] | None = None
             ) -> list[tuple[str, str, dict[str, str] | None]]:
    """``(run label, model label, row or None)`` for every run; ``None`` marks a missing table.

    ``keep(table, row)`` selects rows (e.g. only VLMEvalKit-scored ones); default: all.
    """
    rows = []
    for run in runs:
        tables = run.tables.get(kind, [])
        kept = [(table, [row for row in table.rows if keep is None or keep(table, row)]) for table in tables]
        kept = [(table, table_rows) for table, table_rows in kept if table_rows]
        if not kept:
            rows.append((run.name, MISSING, None))
            continue
        for table, table_rows in kept:
            where = "" if len(tables) == 1 else f" ({table.path.parent.relative_to(run.path)})"
            rows += [(run.name, (row.get("model") or MISSING) + where, row) for row in table_rows]
    return rows


def results_table(kind: str, runs: list[Run], reference: list[dict[str, str]],
                  keep: Callable[[Table, dict], bool] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows: runs (deltas vs the first run's first row), then reference rows.

    Reference cells are shown exactly as the paper gives them (no added decimals).
    """
    rows = run_rows(kind, runs, keep)
    columns = column_order(kind, [t for run in runs for t in run.tables.get(kind, [])])
    baseline = rows[0][2] if rows and rows[0][2] is not None else None
    body = []
    for index, (run_name, model, row) in enumerate(rows):
        values = row or {}
        body.append([run_name, model] + [
            cell(values.get(c), (baseline or {}).get(c), show_delta=baseline is not None and index > 0) for c in columns
        ])
    for row in reference:
        body.append(["reference (paper)", row.get("model") or MISSING] + [(row.get(c) or "").strip() or MISSING for c in columns])
    return ["run", "model", *columns], body


def load_reference(kind: str, reference_dir: Path | None) -> list[dict[str, str]]:
    """The paper's rows for ``kind`` from ``reference_dir`` (``[]`` when the CSV is absent)."""
    if reference_dir is None:
        return []
    path = reference_dir / REFERENCE_FILES[kind]
    return read_table(path).rows if path.is_file() else []
