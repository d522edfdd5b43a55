"""What a run dir holds: the LLaMA-Factory training state and our commands' outputs below it.

A run dir is a ``llamafactory-cli train`` output dir. :func:`read_run` collects

* ``trainer_state.json`` (the dir's own, else the latest ``checkpoint-N/``'s): its
  ``log_history`` training entries give the curves (``loss``, ``nll``, ``mean_target_prob``);
* every ``code_table.csv`` / ``vlm_table.csv`` (``dft-mm eval code|vlm run``) below it;
* every ``token_probs.json`` (``dft-mm analyze tokens``) below it.

Missing pieces stay ``None`` / empty; unreadable files raise :class:`UserError` naming the file.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from dft_mm.errors import UserError

CURVE_METRICS = ("loss", "nll", "mean_target_prob")


@dataclass
class Table:
    """Rows of one CSV (each row ``{column: text}``) and where it came from."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]


@dataclass
class Run:
    """Everything found for one ``--run NAME=DIR``."""

    name: str
    path: Path
    trainer_state: Path | None = None
    curves: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    tables: dict[str, list[Table]] = field(default_factory=dict)  # "code_table" / "vlm_table" -> tables
    token_probs: list[tuple[Path, dict]] = field(default_factory=list)
    scores: list[tuple[str, str, float | None]] = field(default_factory=list)  # (dataset, metric, value)


# headline metric of a ``<dataset>_score.json`` written by ``eval code score`` / ``eval vlm score``
HEADLINE_METRICS = (("pass@1_percent", "pass@1 (%)"), ("score_strict", "score_strict (%)"), ("Overall", "Overall (%)"))


def headline_score(path: Path, payload: dict) -> tuple[str, str, float | None] | None:
    """``(dataset, metric, value)`` of one score file; None when it carries no known metric."""
    dataset = payload.get("benchmark") or path.name.removesuffix("_score.json")
    for key, label in HEADLINE_METRICS:
        if key in payload:
            return dataset, label, payload[key]
    return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read JSON ({err}); rerun the command that wrote it or remove the file.")


def find_trainer_state(run_dir: Path) -> Path | None:
    """``run_dir/trainer_state.json``, else the one of the highest ``checkpoint-N``."""
    own = run_dir / "trainer_state.json"
    if own.is_file():
        return own
    checkpoints = [p for p in run_dir.glob("checkpoint-*/trainer_state.json") if re.fullmatch(r"checkpoint-\d+", p.parent.name)]
    return max(checkpoints, key=lambda p: int(p.parent.name.split("-")[1]), default=None)


def training_curves(state: dict, metrics: tuple[str, ...] = CURVE_METRICS) -> dict[str, tuple[list[float], list[float]]]:
    """``{metric: (steps, values)}`` from the ``log_history`` training entries that carry it."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for entry in state.get("log_history", []):
        for metric in metrics:
            if isinstance(entry.get(metric), (int, float)) and "step" in entry:
                steps, values = curves.setdefault(metric, ([], []))
                steps.append(entry["step"])
                values.append(float(entry[metric]))
    return curves


def read_table(path: Path) -> Table:
    """A results CSV with a header row and a ``model`` column."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "model" not in reader.fieldnames:
            raise UserError(f"{path}: expected a CSV header with a 'model' column; got {reader.fieldnames}.")
        return Table(path, list(reader.fieldnames), [dict(row) for row in reader])


def read_run(name: str, run_dir: str) -> Run:
    """Collect what ``run_dir`` holds; raise :class:`UserError` when the dir does not exist."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"--run {name}={run_dir}: no such directory.")
    run = Run(name, path, trainer_state=find_trainer_state(path))
    if run.trainer_state is not None:
        run.curves = training_curves(_read_json(run.trainer_state))
    for kind in ("code_table", "vlm_table"):
        run.tables[kind] = [read_table(p) for p in sorted(path.rglob(f"{kind}.csv"))]
    run.token_probs = [(p, _read_json(p)) for p in sorted(path.rglob("token_probs.json"))]
    found = (headline_score(p, _read_json(p)) for p in sorted(path.rglob("*_score.json")))
    run.scores = [score for score in found if score is not None]
    return run
