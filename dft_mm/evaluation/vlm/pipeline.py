"""``dft-mm eval vlm run``: generate and score every dataset, then the one-row table.

Layout of ``out``::

    out/<dataset>/<model>_<dataset>.tsv        predictions (resumable) + .generation.json
    out/<dataset>/<dataset>_score.json|csv     metrics (scorer, judge, system prompt recorded)
    out/vlm_table.csv|md                       with --judge: VLMEvalKit's scores, the paper's columns
    out/vlm_proxy_table.csv|md                 without: the judge-free proxy, same columns

Example::

    run("ckpt/dft-3b", "MathVerse_MINI,MathVision,WeMath", "eval_out/dft-3b",
        judge="http://127.0.0.1:8000/v1", judge_model="Qwen2.5-72B-Instruct")
"""

from __future__ import annotations

from pathlib import Path

from dft_mm.evaluation.vlm.generate import GenerationSettings, generate

DEFAULT_DATASETS = "MathVerse_MINI,MathVision,WeMath"


def run(
    model: str,
    datasets: str | list[str],
    out: str | Path,
    settings: GenerationSettings = GenerationSettings(),
    *,
    judge: str | None = None,
    judge_model: str | None = None,
    judge_workers: int = 8,
    kit_python: str | None = None,
) -> dict:
    """Generate (with ``settings``) + score each dataset into ``out/<dataset>/``, then write the table.

    The MathVision column is the full set; ``MathVision_MINI`` fills it (labelled) only when
    it was asked for and the full set was not. Returns ``{"results": {dataset: score json},
    "row": table row}``.
    """
    from dft_mm.evaluation.vlm.datasets import dataset_path, spec_for
    from dft_mm.evaluation.vlm.kit.runner import split_datasets
    from dft_mm.evaluation.vlm.score import score
    from dft_mm.evaluation.vlm.table import table_row, write_vlm_table

    names = split_datasets(datasets)
    for name in names:  # fail on a missing file before any model loads
        dataset_path(name, settings.data_root)
    name = settings.model_name or Path(str(model).rstrip("/")).name
    results = {}
    for dataset in names:
        folder = Path(out) / spec_for(dataset).name
        predictions = generate(model, dataset, folder, settings)
        results[spec_for(dataset).name] = score(dataset, predictions, folder, judge=judge, judge_model=judge_model,
                                                judge_workers=judge_workers, kit_python=kit_python)
    mini_only = "MathVision_MINI" in results and "MathVision" not in results
    row = table_row(name, results, mathvision="MathVision_MINI" if mini_only else "MathVision")
    write_vlm_table(out, [row])
    return {"results": results, "row": row}
