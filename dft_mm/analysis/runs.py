"""What a run dir holds: the LLaMA-Factory training state and our commands' outputs below it.

A run dir is a ``llamafactory-cli train`` output dir. :func:`read_run` collects

* ``trainer_state.json`` (the dir's own, else the latest ``checkpoint-N/``'s): its
  ``log_history`` training entries give the curves (``loss``, ``nll``, ``mean_target_prob``);
* every ``code_table.csv`` / ``vlm_table.csv`` / ``vlm_proxy_table.csv`` (``dft-mm eval
  code|vlm run``) below it;
* every ``token_probs.json`` (``dft-mm analyze tokens``) below it;
* every ``<dataset>_score.json`` (``dft-mm eval code|vlm score``) below it, with the scorer that
  produced it: code scores come from execution; a VLM score is ``"vlmevalkit"`` (the kit's
  judged / official number) only when its file says so, otherwise ``"judge-free"`` (our rule
  and math-verify scorer: a proxy, never a number for the paper's columns).

Missing pieces stay ``None`` / empty; unreadable files raise :class:`UserError` naming the file.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.table import SCORERS

CURVE_METRICS = ("loss", "nll", "mean_target_prob")
PROXY_TABLE = SCORERS["judge-free"][0]  # what `dft-mm eval vlm run` writes for judge-free (proxy) rows


@dataclass
class Table:
    """Rows of one CSV (each row ``{column: text}``) and where it came from."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    scorer: str | None = None  # VLM tables: who scored them (:func:`table_scorer`), set by read_run


@dataclass(frozen=True)
class Score:
    """The headline number of one ``<dataset>_score.json``."""

    dataset: str
    metric: str
    value: float | None
    folder: str  # the score file's folder, relative to the run dir ("." for the run dir itself)
    scorer: str  # "execution" (code), "vlmevalkit" or "judge-free" (VLM)
    judge: str | None = None

    @property
    def scorer_label(self) -> str:
        if self.scorer == "vlmevalkit":
            return "VLMEvalKit" + (f" (judge: {self.judge})" if self.judge else "")
        if self.scorer == "judge-free":
            return "judge-free proxy" + (f" (judge: {self.judge})" if self.judge else "")
        return self.scorer


@dataclass
class Run:
    """Everything found for one ``--run NAME=DIR``."""

    name: str
    path: Path
    trainer_state: Path | None = None
    curves: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    tables: dict[str, list[Table]] = field(default_factory=dict)  # "code_table" / "vlm_table" -> tables
    token_probs: list[tuple[Path, dict]] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)


# headline metric of a ``<dataset>_score.json`` written by ``eval code score`` / ``eval vlm score``
HEADLINE_METRICS = (("pass@1_percent", "pass@1 (%)"), ("score_strict", "score_strict (%)"), ("Overall", "Overall (%)"))


def vlm_scorer(payload: dict) -> str:
    """``"vlmevalkit"`` only when the score file says so; anything else is a judge-free proxy."""
    return "vlmevalkit" if payload.get("scorer") == "vlmevalkit" else "judge-free"


def headline_score(path: Path, payload: dict, run_dir: Path | None = None) -> Score | None:
    """The headline :class:`Score` of one score file; None when it carries no known metric."""
    dataset = payload.get("benchmark") or path.name.removesuffix("_score.json")
    folder = str(path.parent.relative_to(run_dir)) if run_dir else str(path.parent)
    for key, label in HEADLINE_METRICS:
        if key in payload:
            code = key == "pass@1_percent"
            judge = None if code else payload.get("judge") if isinstance(payload.get("judge"), str) else None
            return Score(dataset, label, payload[key], folder, "execution" if code else vlm_scorer(payload), judge)
    return None


def table_scorer(table: Table) -> str:
    """Who scored a VLM table: ``vlm_proxy_table.csv`` is the judge-free proxy by name; a
    ``vlm_table.csv`` is ``"vlmevalkit"`` only when every score file beside or below it says so."""
    if table.path.name == f"{PROXY_TABLE}.csv":
        return "judge-free"
    payloads = [_read_json(p) for p in sorted(table.path.parent.rglob("*_score.json"))]
    scorers = {vlm_scorer(p) for p in payloads if isinstance(p, dict)}
    return "vlmevalkit" if scorers == {"vlmevalkit"} else "judge-free"


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
    run.tables["vlm_table"] += [read_table(p) for p in sorted(path.rglob(f"{PROXY_TABLE}.csv"))]
    for table in run.tables["vlm_table"]:
        table.scorer = table_scorer(table)
    run.token_probs = [(p, _read_json(p)) for p in sorted(path.rglob("token_probs.json"))]
    found = (headline_score(p, _read_json(p), path) for p in sorted(path.rglob("*_score.json")))
    run.scores = [score for score in found if score is not None]
    return run
