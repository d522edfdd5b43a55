"""``dft-mm eval vlm run``: generate and score every dataset, then the one-row table.

Layout of ``out``::

    out/<dataset>/<model>_<dataset>.tsv        predictions (resumable) + .generation.json
    out/<dataset>/<dataset>_score.json|csv     metrics (scorer, judge, system prompt recorded)
    out/vlm_table.csv|md                       with --judge: VLMEvalKit's scores, the paper's columns
    out/vlm_proxy_table.csv|md                 without: the judge-free proxy, same columns

Example::

    run_vlm_eval("ckpt/dft-3b", "MathVerse_MINI,MathVision,WeMath", "eval_out/dft-3b",
                 judge="http://127.0.0.1:8000/v1", judge_model="Qwen2.5-72B-Instruct")
"""

from __future__ import annotations

from pathlib import Path

from dft_mm.evaluation.vlm.generate import DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from dft_mm.evaluation.vlm.prompts import WETHINK_SYSTEM_PROMPT

DEFAULT_DATASETS = "MathVerse_MINI,MathVision,WeMath"


def run_vlm_eval(
    model: str,
    datasets: str | list[str],
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    backend: str = "auto",
    batch_size: int = 8,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    model_name: str | None = None,
    limit: int | None = None,
    judge: str | None = None,
    judge_model: str | None = None,
    judge_workers: int = 8,
    kit_python: str | None = None,
    system_prompt: str | None = WETHINK_SYSTEM_PROMPT,
) -> dict:
    """Generate + score each dataset into ``out/<dataset>/``, then write the table.

    The MathVision column is the full set; ``MathVision_MINI`` fills it (labelled) only when
    it was asked for and the full set was not. Returns ``{"results": {dataset: score json},
    "row": table row}``.
    """
    from dft_mm.evaluation.vlm.datasets import dataset_path, spec_for
    from dft_mm.evaluation.vlm.generate import generate_predictions
    from dft_mm.evaluation.vlm.score import score_predictions
    from dft_mm.evaluation.vlm.table import table_row, write_vlm_table
    from dft_mm.evaluation.vlm.vlmevalkit import split_datasets

    names = split_datasets(datasets)
    for name in names:  # fail on a missing file before any model loads
        dataset_path(name, data_root)
    name = model_name or Path(str(model).rstrip("/")).name
    results = {}
    for dataset in names:
        folder = Path(out) / spec_for(dataset).name
        predictions = generate_predictions(
            model, dataset, folder, data_root=data_root, backend=backend, batch_size=batch_size,
            min_pixels=min_pixels, max_pixels=max_pixels, max_new_tokens=max_new_tokens, model_name=name, limit=limit,
            system_prompt=system_prompt,
        )
        results[spec_for(dataset).name] = score_predictions(dataset, predictions, folder, judge=judge,
                                                            judge_model=judge_model, judge_workers=judge_workers,
                                                            kit_python=kit_python)
    mini_only = "MathVision_MINI" in results and "MathVision" not in results
    row = table_row(name, results, mathvision="MathVision_MINI" if mini_only else "MathVision")
    write_vlm_table(out, [row])
    return {"results": results, "row": row}
