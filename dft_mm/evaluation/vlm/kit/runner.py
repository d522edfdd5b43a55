"""Run VLMEvalKit itself (the installed ``vlmeval`` package, or a checkout's ``run.py``) and read
its score files: the paper's numbers.

The run: one ``Qwen2VLChat`` model entry in a ``--config`` JSON (``min_pixels``,
``max_pixels``, ``max_new_tokens``, ``use_custom_prompt: false`` and ``system_prompt``, the
paper's settings), ``python -m vlmeval.run --config ... --work-dir ... --reuse`` in the kit's
interpreter (:mod:`dft_mm.evaluation.vlm.kit.environment`), with the kit's own options passed through:
``--judge`` (its judge name, e.g. ``gpt-4o-mini``), ``--judge-base-url`` (an OpenAI-compatible
server; the key is the kit's ``OPENAI_API_KEY``), ``--use-vllm``, ``--api-nproc``, and the
attention implementation that ``Qwen2VLChat`` hard-codes (``flash_attention_2``).
``mode="eval"`` rescores predictions already in the work dir without loading the model.

The results: every ``<dataset>_score.json`` in ``out`` holds the metrics plus
``"scorer": "vlmevalkit"``, ``"judge"`` (the judge that made the file; ``exact_matching``
for WeMath's silent fallback, which is refused unless asked for) and ``"system_prompt"``; the
paper table goes to ``vlm_table.csv`` / ``.md``.

Example::

    run_vlmevalkit("ckpt/dft-3b", "MathVerse_MINI,MathVision,WeMath", "vlmeval_work",
                   judge="Qwen2.5-72B-Instruct", judge_base_url="http://127.0.0.1:8000/v1", use_vllm=True)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from dft_mm.durable import write_json
from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.datasets import KNOWN_DATASETS
from dft_mm.evaluation.vlm.generate import DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from dft_mm.evaluation.vlm.kit.files import EXACT_MATCHING, find_score_files, parse_score_file
from dft_mm.evaluation.vlm.prompts import WETHINK_SYSTEM_PROMPT

MODES = ("all", "infer", "eval")


def split_datasets(datasets: str | list[str]) -> list[str]:
    """``"A,B"`` or ``["A", "B"]`` -> ``["A", "B"]`` (blanks dropped)."""
    items = datasets.split(",") if isinstance(datasets, str) else list(datasets)
    return [item.strip() for item in items if item.strip()]


def _check_known(datasets: list[str]) -> None:
    unknown = [name for name in datasets if name not in KNOWN_DATASETS]
    if unknown:
        raise UserError(f"VLMEvalKit runs only its registered datasets; unknown: {', '.join(unknown)} "
                        f"(known: {', '.join(KNOWN_DATASETS)}). Score custom TSVs with `dft-mm eval vlm run`.")


def vlmevalkit_config(
    model_path: str, model_name: str, datasets: list[str], *, min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    system_prompt: str | None = WETHINK_SYSTEM_PROMPT,
) -> dict:
    """The ``run.py --config`` JSON: one ``Qwen2VLChat`` model, one entry per dataset."""
    _check_known(datasets)
    model = {"class": "Qwen2VLChat", "model_path": model_path, "min_pixels": min_pixels, "max_pixels": max_pixels,
             "max_new_tokens": max_new_tokens, "use_custom_prompt": False}
    if system_prompt is not None:
        model["system_prompt"] = system_prompt
    return {
        "model": {model_name: model},
        "data": {name: {"class": KNOWN_DATASETS[name].vlmevalkit_class, "dataset": name} for name in datasets},
    }


def vlmevalkit_arguments(
    config_path: str | Path, model_name: str, datasets: list[str], work_dir: str | Path, *, mode: str = "all",
    judge: str | None = None, judge_base_url: str | None = None, use_vllm: bool = False, api_nproc: int | None = None,
) -> list[str]:
    """``vlmeval.run``'s flags. ``eval`` names the model and data instead of ``--config``: the
    kit builds a config's model even when it only evaluates."""
    if mode not in MODES:
        raise UserError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "eval":
        arguments = ["--model", model_name, "--data", *datasets, "--mode", "eval"]
    else:
        arguments = ["--config", str(config_path), "--mode", mode]
    arguments += ["--work-dir", str(work_dir), "--reuse"]  # --reuse: continue from earlier predictions and caches
    if judge:
        arguments += ["--judge", judge]
    if judge_base_url:
        arguments += ["--judge-base-url", judge_base_url.rstrip("/").removesuffix("/chat/completions")]
    if use_vllm:
        arguments.append("--use-vllm")
    if api_nproc:
        arguments += ["--api-nproc", str(api_nproc)]
    return arguments


def collect_results(
    work_dir: str | Path, model_name: str, datasets: list[str], *, judge: str | None = None,
) -> dict[str, dict]:
    """``{dataset: {metrics..., "scorer", "judge", "score_file"}}`` from the kit's files.

    One judge per dataset: ``judge`` when given (a WeMath file the kit scored by exact
    matching instead counts as ``exact_matching``), else the only one found; several judges
    for one dataset without ``judge`` is an error, never "newest wins". Exact matching is
    refused unless asked for (``judge="exact_matching"``).
    """
    found = find_score_files(Path(work_dir) / model_name, model_name)
    results = {}
    for dataset in datasets:
        judges = found.get(dataset, {})
        if not judges:
            print(f"warning: no VLMEvalKit score file for {dataset} under {Path(work_dir) / model_name}", file=sys.stderr)
            continue
        if judge is not None:
            chosen = judge if judge in judges else (EXACT_MATCHING if EXACT_MATCHING in judges else None)
            if chosen is None:
                raise UserError(f"{dataset}: no score file by judge {judge!r} under {work_dir} "
                                f"(found judges: {', '.join(sorted(judges))})")
        elif len(judges) == 1:
            chosen = next(iter(judges))
        else:
            raise UserError(f"{dataset}: score files by several judges ({', '.join(sorted(judges))}) under {work_dir}; "
                            "pass --judge NAME to choose one")
        if chosen == EXACT_MATCHING and judge != EXACT_MATCHING:
            raise UserError(
                f"{judges[chosen]}: VLMEvalKit scored {dataset} by exact matching (a literal 'Answer: X') because "
                f"its judge {judge or 'gpt-4o-mini'!r} did not answer, yet named the file after the judge. Fix the judge "
                "(--judge-base-url, OPENAI_API_KEY) and rerun, or pass --judge exact_matching to accept exact matching"
            )
        path = judges[chosen]
        results[dataset] = {**parse_score_file(KNOWN_DATASETS[dataset].benchmark, path),
                            "scorer": "vlmevalkit", "judge": chosen, "score_file": str(path)}
    return results



def run_vlmevalkit(
    model: str,
    datasets: str | list[str],
    work_dir: str | Path,
    *,
    vlmevalkit: str | Path | None = None,
    kit_python: str | None = None,
    judge: str | None = None,
    judge_base_url: str | None = None,
    use_vllm: bool = False,
    attn_implementation: str | None = None,
    api_nproc: int | None = None,
    system_prompt: str | None = WETHINK_SYSTEM_PROMPT,
    model_name: str | None = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    mode: str = "all",
    data_root: str | Path | None = None,
    out: str | Path | None = None,
    parse_only: bool = False,
) -> dict:
    """Write the config, run VLMEvalKit (unless ``parse_only``), read its scores, write the
    ``<dataset>_score.json`` files and the paper table into ``out`` (default ``work_dir``).

    ``vlmevalkit``: a checkout (its ``run.py`` runs, with the checkout importable) instead of
    the installed package. ``data_root``: the kit's ``$LMUData`` (its benchmark TSVs; default
    as the kit decides). Returns ``{"config", "command", "results", "row"}`` (``mode="infer"``:
    no results, no table).
    """
    from dft_mm.evaluation.vlm.kit.environment import find_kit_python, kit_environment, run_kit_worker
    from dft_mm.evaluation.vlm.table import table_row, write_vlm_table

    names = split_datasets(datasets)
    _check_known(names)
    name = model_name or Path(str(model).rstrip("/")).name
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model_path = str(Path(model).resolve()) if Path(model).is_dir() else str(model)
    config = vlmevalkit_config(model_path, name, names, min_pixels=min_pixels, max_pixels=max_pixels,
                               max_new_tokens=max_new_tokens, system_prompt=system_prompt)
    config_path = work / "dft_mm_vlmevalkit_config.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    arguments = vlmevalkit_arguments(config_path, name, names, work, mode=mode, judge=judge,
                                     judge_base_url=judge_base_url, use_vllm=use_vllm, api_nproc=api_nproc)
    worker = ["run", *(["--attn-implementation", attn_implementation] if attn_implementation else [])]
    if vlmevalkit is not None:
        checkout = Path(vlmevalkit).expanduser().resolve()
        if not (checkout / "run.py").is_file():
            raise UserError(f"{checkout / 'run.py'} not found: --vlmevalkit must be a VLMEvalKit checkout "
                            "(or leave it out to run the installed kit, see `dft-mm eval vlm install-kit`)")
        worker += ["--checkout", str(checkout)]
    command = [*worker, "--", *arguments]
    served_judge = os.environ.get("LOCAL_LLM")  # the kit sends this model name instead of --judge when set
    if not parse_only:
        python = find_kit_python(kit_python)
        data = {"LMUData": str(Path(data_root).resolve())} if data_root else {}
        run_kit_worker(python, command, env=kit_environment(**data), cwd=work,
                       what="VLMEvalKit (MathVerse/MathVision need a working judge: --judge-base-url or OPENAI_API_KEY)")
    if mode == "infer":  # predictions only: nothing scored yet
        return {"config": str(config_path), "command": command, "results": {}, "row": None}
    results = collect_results(work, name, names, judge=judge)
    destination = Path(out) if out else work
    for dataset, result in results.items():
        if served_judge and not parse_only and result["judge"] != EXACT_MATCHING:
            result["judge"] = served_judge
        write_json(destination / f"{dataset}_score.json", {**result, "system_prompt": system_prompt, "model": name,
                                                           "benchmark": KNOWN_DATASETS[dataset].benchmark})
    row = table_row(name, results)
    write_vlm_table(destination, [row])
    return {"config": str(config_path), "command": command, "results": results, "row": row}
