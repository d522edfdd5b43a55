"""The paper's multimodal table: ``vlm_table.csv`` and ``vlm_table.md``, one row per model.

Columns (percent, two decimals; empty when not run): MathVerse Vision Only, Vision
Intensive, Vision Dominant (from the dedicated ``MathVerse_MINI_Vision_*`` datasets, else
from ``MathVerse_MINI``'s per-version breakdown), MathVerse Overall (``MathVerse_MINI``, all
five problem versions), MathVision (``MathVision``, else ``MathVision_MINI``) and WeMath
(``score_strict``).

Example::

    row = table_row("dft-3b", {"WeMath": {"score_strict": 23.71, ...}})
    write_vlm_table("out/", [row])
"""

from __future__ import annotations

import csv
from pathlib import Path

TABLE_COLUMNS = (
    "model",
    "MathVerse Vision Only",
    "MathVerse Vision Intensive",
    "MathVerse Vision Dominant",
    "MathVerse Overall",
    "MathVision",
    "WeMath",
)
# column -> ordered (dataset, metric) sources; the first one present wins
_SOURCES = {
    "MathVerse Vision Only": (("MathVerse_MINI_Vision_Only", "Overall"), ("MathVerse_MINI_Vision_Only_cot", "Overall"),
                              ("MathVerse_MINI", "Vision Only")),
    "MathVerse Vision Intensive": (("MathVerse_MINI_Vision_Intensive", "Overall"), ("MathVerse_MINI", "Vision Intensive")),
    "MathVerse Vision Dominant": (("MathVerse_MINI_Vision_Dominant", "Overall"), ("MathVerse_MINI", "Vision Dominant")),
    "MathVerse Overall": (("MathVerse_MINI", "Overall"),),
    "MathVision": (("MathVision", "Overall"), ("MathVision_MINI", "Overall")),
    "WeMath": (("WeMath", "score_strict"),),
}


def table_row(model_name: str, results: dict[str, dict[str, float]]) -> dict[str, float | str | None]:
    """One table row from ``{dataset: metrics}`` (metrics as in ``<dataset>_score.json``)."""
    row: dict[str, float | str | None] = {"model": model_name}
    for column, sources in _SOURCES.items():
        row[column] = next((results[d][m] for d, m in sources if m in results.get(d, {})), None)
    return row


def _cell(value) -> str:
    return "" if value is None else (f"{value:.2f}" if isinstance(value, float | int) else str(value))


def write_vlm_table(out: str | Path, rows: list[dict]) -> tuple[Path, Path]:
    """Write ``out/vlm_table.csv`` and ``out/vlm_table.md``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "vlm_table.csv", out / "vlm_table.md"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE_COLUMNS)
        writer.writerows([[_cell(row.get(column)) for column in TABLE_COLUMNS] for row in rows])
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(column)) for column in TABLE_COLUMNS) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path
