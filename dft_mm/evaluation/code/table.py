"""The paper's code table: one row per model, pass@1 in percent (two decimals), columns in the
paper's order; an empty cell for a benchmark that was not run.

``code_table.csv`` / ``code_table.md`` columns: model, HumanEval, HumanEval+, MultiPL-E Python,
C++, Java, PHP, TS, C#, Bash, JS, and MultiPL-E Avg (mean of the eight languages, empty unless
all eight were scored).
"""

from __future__ import annotations

import csv
from pathlib import Path

from dft_mm import durable

MULTIPLE_COLUMNS = {"python": "MultiPL-E Python", "cpp": "MultiPL-E C++", "java": "MultiPL-E Java",
                    "php": "MultiPL-E PHP", "ts": "MultiPL-E TS", "cs": "MultiPL-E C#", "sh": "MultiPL-E Bash",
                    "js": "MultiPL-E JS"}
COLUMNS = ["model", "HumanEval", "HumanEval+", *MULTIPLE_COLUMNS.values(), "MultiPL-E Avg"]


def table_row(model: str, scores: dict[str, dict]) -> dict[str, str]:
    """Row cells from ``{benchmark: score dict}`` (as written to ``<benchmark>_score.json``).

    HumanEval comes from the ``humaneval`` run, or else from HumanEval+'s base tests (EvalPlus
    reports HumanEval that way).
    """
    row = {column: "" for column in COLUMNS}
    row["model"] = model
    percent = lambda value: f"{100 * value:.2f}"  # noqa: E731
    if "humaneval" in scores:
        row["HumanEval"] = percent(scores["humaneval"]["pass@1"])
    elif "humaneval+" in scores:
        row["HumanEval"] = percent(scores["humaneval+"]["base"]["pass@1"])
    if "humaneval+" in scores:
        row["HumanEval+"] = percent(scores["humaneval+"]["pass@1"])
    values = []
    for lang, column in MULTIPLE_COLUMNS.items():
        if f"multipl-e-{lang}" in scores:
            value = scores[f"multipl-e-{lang}"]["pass@1"]
            row[column] = percent(value)
            values.append(value)
    if len(values) == len(MULTIPLE_COLUMNS):
        row["MultiPL-E Avg"] = percent(sum(values) / len(values))
    return row


def write_table(out: str | Path, rows: list[dict[str, str]]) -> tuple[Path, Path]:
    """Write ``code_table.csv`` and ``code_table.md`` in ``out``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "code_table.csv", out / "code_table.md"
    with durable.open_atomic(csv_path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    durable.write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path
