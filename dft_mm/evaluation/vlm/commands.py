"""``dft-mm eval vlm generate|score|vlmevalkit|run`` (MathVerse, MathVision, WeMath, custom TSVs).

Each verb maps to one Python function with the same arguments:
:func:`~dft_mm.evaluation.vlm.generate.generate_predictions`,
:func:`~dft_mm.evaluation.vlm.score.score_predictions`,
:func:`~dft_mm.evaluation.vlm.vlmevalkit.run_vlmevalkit`,
:func:`~dft_mm.evaluation.vlm.pipeline.run_vlm_eval`. Heavy imports happen in the handlers.
"""

from __future__ import annotations

import argparse
import json

# Both modules import nothing heavy at module level.
from dft_mm.evaluation.vlm.generate import DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from dft_mm.evaluation.vlm.pipeline import DEFAULT_DATASETS

_DATASET_HELP = ("VLMEvalKit dataset name (MathVerse_MINI[_Vision_Only|_Vision_Intensive|_Vision_Dominant], "
                 "MathVision[_MINI], WeMath) or a path to a TSV in VLMEvalKit format")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Qwen2.5-VL checkpoint folder (or Hugging Face id)")
    parser.add_argument("--model-name", default=None, help="name in file names and the table (default: folder name)")
    parser.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS, help="image pixel lower bound")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="image pixel upper bound")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    parser.add_argument("--data-root", default=None, help="folder of <name>.tsv files (default: $LMUData or ~/LMUData)")
    parser.add_argument("--backend", choices=("auto", "hf", "vllm"), default="auto",
                        help="auto = vLLM when importable with a GPU, else HF transformers")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="rows per generate call (HF batch); vLLM takes at least 256 at a time")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows (smoke tests)")


def _add_judge_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judge", default=None, metavar="URL",
                        help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) asked when rules find no answer")
    parser.add_argument("--judge-model", default="judge", help="model name sent to the judge endpoint")
    parser.add_argument("--judge-workers", type=int, default=8, help="judge requests in flight at once")


def _generate(args: argparse.Namespace) -> None:
    from dft_mm.evaluation.vlm.generate import generate_predictions

    path = generate_predictions(
        args.model, args.dataset, args.out, data_root=args.data_root, backend=args.backend, batch_size=args.batch_size,
        min_pixels=args.min_pixels, max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens,
        model_name=args.model_name, limit=args.limit,
    )
    print(json.dumps({"predictions": str(path)}))


def _score(args: argparse.Namespace) -> None:
    from dft_mm.evaluation.vlm.score import score_predictions

    result = score_predictions(args.dataset, args.predictions, args.out, judge=args.judge, judge_model=args.judge_model,
                               judge_workers=args.judge_workers)
    print(json.dumps({key: value for key, value in result.items() if key != "details"}, indent=2))


def _vlmevalkit(args: argparse.Namespace) -> None:
    from dft_mm.evaluation.vlm.vlmevalkit import run_vlmevalkit

    result = run_vlmevalkit(
        args.model, args.datasets, args.vlmevalkit, args.work_dir, judge=args.judge, model_name=args.model_name,
        min_pixels=args.min_pixels, max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens, out=args.out,
        parse_only=args.parse_only,
    )
    print(json.dumps(result["row"], indent=2))


def _run(args: argparse.Namespace) -> None:
    from dft_mm.evaluation.vlm.pipeline import run_vlm_eval

    result = run_vlm_eval(
        args.model, args.datasets, args.out, data_root=args.data_root, backend=args.backend,
        batch_size=args.batch_size, min_pixels=args.min_pixels, max_pixels=args.max_pixels,
        max_new_tokens=args.max_new_tokens, model_name=args.model_name, limit=args.limit, judge=args.judge,
        judge_model=args.judge_model, judge_workers=args.judge_workers,
    )
    print(json.dumps(result["row"], indent=2))


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``generate``, ``score``, ``vlmevalkit`` and ``run`` under ``dft-mm eval vlm``."""
    verbs = parser.add_subparsers(dest="vlm_verb", required=True, metavar="VERB")

    generate = verbs.add_parser("generate", help="greedy predictions in VLMEvalKit's format (resumable)")
    _add_generation_options(generate)
    generate.add_argument("--dataset", required=True, help=_DATASET_HELP)
    generate.add_argument("--out", required=True, help="folder for <model>_<dataset>.tsv")
    generate.set_defaults(handler=_generate)

    score = verbs.add_parser("score", help="judge-free (or --judge) scoring of a prediction file")
    score.add_argument("--dataset", required=True, help=_DATASET_HELP + " (sets the metric semantics)")
    score.add_argument("--predictions", required=True, help="our .tsv or VLMEvalKit's <model>_<dataset>.xlsx/.tsv")
    score.add_argument("--out", required=True, help="folder for <dataset>_score.json/.csv and <dataset>_scored.tsv")
    _add_judge_options(score)
    score.set_defaults(handler=_score)

    adapter = verbs.add_parser("vlmevalkit", help="run a VLMEvalKit checkout and import its scores")
    _add_model_options(adapter)
    adapter.add_argument("--datasets", required=True, help="comma-separated VLMEvalKit dataset names")
    adapter.add_argument("--vlmevalkit", required=True, help="path of the VLMEvalKit checkout (holds run.py)")
    adapter.add_argument("--work-dir", required=True, help="VLMEvalKit --work-dir")
    adapter.add_argument("--judge", default=None, help="VLMEvalKit --judge (e.g. gpt-4o-mini; see docs for LOCAL_LLM)")
    adapter.add_argument("--out", default=None, help="folder for vlm_table.csv/.md (default: --work-dir)")
    adapter.add_argument("--parse-only", action="store_true", help="do not run VLMEvalKit; parse existing results")
    adapter.set_defaults(handler=_vlmevalkit)

    run = verbs.add_parser("run", help="generate + score all datasets, then the paper's table")
    _add_generation_options(run)
    _add_judge_options(run)
    run.add_argument("--datasets", default=DEFAULT_DATASETS, help="comma-separated; " + _DATASET_HELP)
    run.add_argument("--out", required=True, help="folder for <dataset>/ results and vlm_table.csv/.md")
    run.set_defaults(handler=_run)
