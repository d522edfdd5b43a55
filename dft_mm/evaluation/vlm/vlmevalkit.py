"""Adapter to a VLMEvalKit checkout (not on PyPI): write its ``--config`` JSON, run its
``run.py``, and read its ``*_score.csv`` files into our table format.

VLMEvalKit scores MathVerse and MathVision only with a judge LLM: an OpenAI key, or a
local OpenAI-compatible server given as ``OPENAI_API_BASE=http://HOST:PORT/v1/chat/completions``
plus ``LOCAL_LLM=<served model name>`` (and any ``OPENAI_API_KEY``) in the environment or
VLMEvalKit's ``.env``. WeMath falls back to exact matching without one.

Result files read (``<work>/<model>/<run id>/``, the newest of each dataset wins):

- MathVerse: ``<model>_<dataset>_<judge>_score.csv`` (rows ``average`` / ``problem_version``
  / ``subfield`` flattened, per-version cells are dict literals),
- MathVision: ``<model>_<dataset>_<judge>_score.csv`` (``Subject, tot, prefetch, hit,
  prefetch_rate, acc``),
- WeMath: ``<model>_WeMath_score.csv`` (percent strings, ``"35.24%"``, ``"12.19% (64)"``).

Example::

    run_vlmevalkit("ckpt/dft-3b", "MathVerse_MINI,MathVision,WeMath", "~/VLMEvalKit", "vlmeval_work",
                   judge="gpt-4o-mini")
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.datasets import KNOWN_DATASETS, MATHVERSE, MATHVISION, WEMATH
from dft_mm.evaluation.vlm.generate import DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

MATHVERSE_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")
_WEMATH_COLUMNS = {
    "Score (Strict)": "score_strict", "Score (Loose)": "score_loose",
    "InsufficientKnowledge (Strict)": "IK", "InadequateGeneralization (Strict)": "IG",
    "CompleteMastery (Strict)": "CM_strict", "CompleteMastery (Loose)": "CM_loose",
    "RoteMemorization (Strict)": "RM_strict", "RoteMemorization (Loose)": "RM_loose",
    "One-step(S1)": "S1", "Two-step(S2)": "S2", "Three-step(S3)": "S3",
}
# VLMEvalKit's Qwen2VLChat loads the Qwen2.5-VL class only when the path says so.
_QWEN25_MARKERS = ("2.5", "2_5", "qwen25")


def split_datasets(datasets: str | list[str]) -> list[str]:
    """``"A,B"`` or ``["A", "B"]`` -> ``["A", "B"]`` (blanks dropped)."""
    items = datasets.split(",") if isinstance(datasets, str) else list(datasets)
    return [item.strip() for item in items if item.strip()]


def vlmevalkit_config(
    model_path: str, model_name: str, datasets: list[str], *, min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> dict:
    """The ``run.py --config`` JSON: one ``Qwen2VLChat`` model, one entry per dataset."""
    unknown = [name for name in datasets if name not in KNOWN_DATASETS]
    if unknown:
        raise UserError(f"VLMEvalKit runs only its registered datasets; unknown: {', '.join(unknown)} "
                        f"(known: {', '.join(KNOWN_DATASETS)}). Score custom TSVs with `dft-mm eval vlm run`.")
    return {
        "model": {model_name: {
            "class": "Qwen2VLChat", "model_path": model_path, "min_pixels": min_pixels, "max_pixels": max_pixels,
            "max_new_tokens": max_new_tokens, "use_custom_prompt": False,
        }},
        "data": {name: {"class": KNOWN_DATASETS[name].vlmevalkit_class, "dataset": name} for name in datasets},
    }


def _qwen25_path(model: Path, work_dir: Path) -> Path:
    """``model`` itself when its path names Qwen2.5, else a symlink that does."""
    if any(marker in str(model).lower() for marker in _QWEN25_MARKERS):
        return model
    link = work_dir / "models" / f"{model.name}-qwen2_5-vl"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(model.resolve(), target_is_directory=True)
    return link


def _percent(cell) -> float | None:
    match = re.match(r"\s*(-?\d+(?:\.\d+)?)\s*%?", str(cell))
    return float(match.group(1)) if match else None


def parse_mathverse_score(path: str | Path) -> dict[str, float]:
    """``Overall`` and per-version accuracy from VLMEvalKit's MathVerse score CSV."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    metrics = {"Overall": float(frame.loc[0, "accuracy"])}
    for version in MATHVERSE_VERSIONS:
        for cell in frame.get(version, []):
            if cell.strip().startswith("{"):
                metrics[version] = float(ast.literal_eval(cell)["accuracy"])
    return metrics


def parse_mathvision_score(path: str | Path) -> dict[str, float]:
    """``Overall`` and per-subject accuracy from VLMEvalKit's MathVision score CSV."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {row["Subject"]: float(row["acc"]) for _, row in frame.iterrows()}


def parse_wemath_score(path: str | Path) -> dict[str, float]:
    """Our WeMath keys from VLMEvalKit's ``<model>_WeMath_score.csv`` (percent strings)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {key: _percent(frame.loc[0, column]) for column, key in _WEMATH_COLUMNS.items() if column in frame.columns}


_PARSERS = {MATHVERSE: parse_mathverse_score, MATHVISION: parse_mathvision_score, WEMATH: parse_wemath_score}


def _dataset_of(filename: str, model_name: str) -> str | None:
    """The longest known dataset name right after ``<model>_`` in a result file name."""
    prefix = f"{model_name}_"
    if not filename.startswith(prefix):
        return None
    rest = filename[len(prefix):]
    names = [name for name in KNOWN_DATASETS if rest.startswith(f"{name}_")]
    return max(names, key=len) if names else None


def parse_vlmevalkit_results(work_dir: str | Path, model_name: str) -> dict[str, dict[str, float]]:
    """``{dataset: metrics}`` from the newest ``*_score.csv`` of each dataset under ``work_dir``."""
    root = Path(work_dir)
    newest: dict[str, Path] = {}
    for path in root.rglob("*_score.csv"):
        dataset = _dataset_of(path.name, model_name)
        if dataset is None:
            continue
        if dataset not in newest or path.resolve().stat().st_mtime > newest[dataset].resolve().stat().st_mtime:
            newest[dataset] = path
    return {dataset: _PARSERS[KNOWN_DATASETS[dataset].benchmark](path) for dataset, path in sorted(newest.items())}


def run_vlmevalkit(
    model: str,
    datasets: str | list[str],
    vlmevalkit: str | Path,
    work_dir: str | Path,
    *,
    judge: str | None = None,
    model_name: str | None = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    out: str | Path | None = None,
    parse_only: bool = False,
) -> dict:
    """Write the config, run VLMEvalKit (unless ``parse_only``), parse its scores, write the table.

    The table (``vlm_table.csv/.md`` in ``out``, default ``work_dir``) labels the row
    ``<model> (VLMEvalKit)`` so it sits beside the built-in scorer's row in reports.
    Returns ``{"config": path, "results": {dataset: metrics}, "row": table row}``.
    """
    from dft_mm.evaluation.vlm.table import table_row, write_vlm_table

    names = split_datasets(datasets)
    name = model_name or Path(str(model).rstrip("/")).name
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model_path = _qwen25_path(Path(model), work) if Path(model).is_dir() else Path(model)
    config = vlmevalkit_config(str(model_path), name, names, min_pixels=min_pixels, max_pixels=max_pixels,
                               max_new_tokens=max_new_tokens)
    config_path = work / "dft_mm_vlmevalkit_config.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    if not parse_only:
        run_py = Path(vlmevalkit).expanduser() / "run.py"
        if not run_py.is_file():
            raise UserError(f"{run_py} not found: --vlmevalkit must be a VLMEvalKit checkout "
                            "(git clone https://github.com/open-compass/VLMEvalKit && pip install -e VLMEvalKit)")
        # --reuse: a rerun continues from VLMEvalKit's earlier predictions and judge caches
        command = [sys.executable, str(run_py), "--config", str(config_path), "--work-dir", str(work), "--reuse"]
        if judge:
            command += ["--judge", judge]
        print("running:", " ".join(command), flush=True)
        if subprocess.run(command, cwd=run_py.parent, check=False).returncode != 0:
            raise UserError("VLMEvalKit failed (command above). MathVerse/MathVision need a judge: set OPENAI_API_KEY, "
                            "or OPENAI_API_BASE + LOCAL_LLM for a local server; see docs/vlm-eval.md")
    results = parse_vlmevalkit_results(work / name, name)
    missing = [dataset for dataset in names if dataset not in results]
    if missing:
        print(f"warning: no VLMEvalKit score file for {', '.join(missing)} under {work / name}", file=sys.stderr)
    row = table_row(f"{name} (VLMEvalKit)", results)
    write_vlm_table(out or work, [row])
    return {"config": str(config_path), "results": results, "row": row}
