"""The paper's multimodal table, one row per model, in two files per scorer:

- ``vlm_table.csv`` / ``vlm_table.md``: VLMEvalKit's judged numbers (``"scorer": "vlmevalkit"``),
  the ones to put next to the paper;
- ``vlm_proxy_table.csv`` / ``vlm_proxy_table.md``: the judge-free proxy (``"scorer":
  "judge-free"``), same columns, never in the paper's table.

Columns (percent, two decimals; empty when not run): MathVerse Vision Only, Vision
Intensive, Vision Dominant (from the dedicated ``MathVerse_MINI_Vision_*`` datasets, else
from ``MathVerse_MINI``'s per-version rows), MathVerse Overall (``MathVerse_MINI``, all five
problem versions), MathVision (the full 3,040-question ``MathVision``; ``MathVision_MINI``
only when asked, and then the row's model says so) and WeMath (``score_strict``).

Example::

    row = table_row("dft-3b", {"WeMath": {"score_strict": 23.71, "scorer": "vlmevalkit", ...}})
    write_vlm_table("out/", [row])
"""

from __future__ import annotations

import csv
from pathlib import Path

from dft_mm.errors import UserError

TABLE_COLUMNS = (
    "model",
    "MathVerse Vision Only",
    "MathVerse Vision Intensive",
    "MathVerse Vision Dominant",
    "MathVerse Overall",
    "MathVision",
    "WeMath",
)
SCORERS = {"vlmevalkit": ("vlm_table", "VLMEvalKit's judged scores"),
           "judge-free": ("vlm_proxy_table", "judge-free proxy (rules + math-verify), not the paper's metric")}
MATHVISION_DATASETS = ("MathVision", "MathVision_MINI")
# column -> ordered (dataset, metric) sources; the first one present wins
_SOURCES = {
    "MathVerse Vision Only": (("MathVerse_MINI_Vision_Only", "Overall"), ("MathVerse_MINI", "Vision Only")),
    "MathVerse Vision Intensive": (("MathVerse_MINI_Vision_Intensive", "Overall"), ("MathVerse_MINI", "Vision Intensive")),
    "MathVerse Vision Dominant": (("MathVerse_MINI_Vision_Dominant", "Overall"), ("MathVerse_MINI", "Vision Dominant")),
    "MathVerse Overall": (("MathVerse_MINI", "Overall"),),
    "WeMath": (("WeMath", "score_strict"),),
}


def table_row(model_name: str, results: dict[str, dict], *, mathvision: str = "MathVision") -> dict:
    """One row from ``{dataset: score json}``; ``row["scorer"]`` says which table it belongs to.

    ``mathvision="MathVision_MINI"`` fills the MathVision column from the mini set and
    appends `` [MathVision_MINI]`` to the model name. Results of different scorers in one
    row are refused."""
    if mathvision not in MATHVISION_DATASETS:
        raise UserError(f"mathvision={mathvision!r}: choose one of {', '.join(MATHVISION_DATASETS)}")
    scorers = {result.get("scorer") for result in results.values()}
    if len(scorers) > 1 or not scorers <= set(SCORERS):
        raise UserError(f"{model_name}: results of scorers {sorted(map(str, scorers))} cannot make one table row "
                        f"(each score JSON names its 'scorer', one of {', '.join(SCORERS)}; rescore files without it)")
    label = model_name if mathvision == "MathVision" else f"{model_name} [{mathvision}]"
    row: dict = {"model": label, "scorer": next(iter(scorers), "vlmevalkit")}
    for column, sources in {**_SOURCES, "MathVision": ((mathvision, "Overall"),)}.items():
        row[column] = next((results[d][m] for d, m in sources if m in results.get(d, {})), None)
    return row


def _cell(value) -> str:
    return "" if value is None else (f"{value:.2f}" if isinstance(value, float | int) else str(value))


def write_vlm_table(out: str | Path, rows: list[dict]) -> tuple[Path, Path]:
    """Write the rows' table (``vlm_table`` or ``vlm_proxy_table``, ``.csv`` and ``.md``) into
    ``out``; all rows must come from one scorer. Returns both paths."""
    scorers = {row.get("scorer", "vlmevalkit") for row in rows}
    if len(scorers) != 1:
        raise UserError(f"one table holds one scorer's rows; got {sorted(scorers)}")
    stem, caption = SCORERS[scorers.pop()]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE_COLUMNS)
        writer.writerows([[_cell(row.get(column)) for column in TABLE_COLUMNS] for row in rows])
    lines = [f"Scores (%): {caption}.", "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(column)) for column in TABLE_COLUMNS) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path
