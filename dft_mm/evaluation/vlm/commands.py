"""``dft-mm eval vlm generate|score|vlmevalkit|run|install-kit`` (MathVerse, MathVision, WeMath,
custom TSVs).

Each verb maps to one Python function with the same arguments:
:func:`~dft_mm.evaluation.vlm.generate.generate`,
:func:`~dft_mm.evaluation.vlm.score.score`,
:func:`~dft_mm.evaluation.vlm.kit.runner.run_vlmevalkit`,
:func:`~dft_mm.evaluation.vlm.pipeline.run`,
:func:`~dft_mm.evaluation.vlm.kit.environment.install_kit`; ``generate`` and ``run`` take their
generation options as one :class:`~dft_mm.evaluation.vlm.generate.GenerationSettings`, built
here once. Heavy imports happen in the handlers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

# These modules import nothing heavy at module level.
from dft_mm.evaluation.vlm.generate import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    GenerationSettings,
)
from dft_mm.evaluation.vlm.kit.runner import MODES
from dft_mm.evaluation.vlm.pipeline import DEFAULT_DATASETS
from dft_mm.evaluation.vlm.prompts import resolve_system_prompt

_DATASET_HELP = ("VLMEvalKit dataset name (MathVerse_MINI[_Vision_Only|_Vision_Intensive|_Vision_Dominant], "
                 "MathVision[_MINI], WeMath) or a path to a TSV in VLMEvalKit format")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Qwen2.5-VL checkpoint folder (or Hugging Face id)")
    parser.add_argument("--model-name", default=None, help="name in file names and the table (default: folder name)")
    parser.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS, help="image pixel lower bound")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="image pixel upper bound")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--system-prompt", type=resolve_system_prompt, default="wethink", metavar="wethink|none|TEXT",
                        help="system turn: 'wethink' (default: the WeThink converter's prompt, as the paper's models "
                             "were trained), 'none' (the chat template's default) or the text itself; recorded")


def _add_kit_python(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kit-python", default=None, metavar="PATH",
                        help="interpreter with VLMEvalKit (default: $DFT_MM_VLMEVAL_PYTHON, this one if it has "
                             "vlmeval, else the environment of `dft-mm eval vlm install-kit`)")


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
                        help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1; key: $OPENAI_API_KEY): score "
                             "with VLMEvalKit's own procedure and this judge (the paper's metric). Without it: the "
                             "judge-free proxy")
    parser.add_argument("--judge-model", default=None, help="model name the judge endpoint serves (with --judge)")
    parser.add_argument("--judge-workers", type=int, default=8, help="judge requests in flight at once (the kit's nproc)")
    _add_kit_python(parser)


def _generation_settings(args: argparse.Namespace) -> GenerationSettings:
    """The generation options (``_add_generation_options``) as one settings object."""
    return GenerationSettings(**{field.name: getattr(args, field.name)
                                 for field in dataclasses.fields(GenerationSettings)})


def _generate(args: argparse.Namespace) -> None:
    from dft_mm.evaluation.vlm.generate import generate

    path = generate(args.model, args.dataset, args.out, _generation_settings(args))
    print(json.dumps({"predictions": str(path)}))


def _score(args: argparse.Namespace) -> None:
    from dft_mm.evaluation.vlm.score import score

    result = score(args.dataset, args.predictions, args.out, judge=args.judge, judge_model=args.judge_model,
                   judge_workers=args.judge_workers, kit_python=args.kit_python)
    print(json.dumps({key: value for key, value in result.items() if key != "details"}, indent=2))


def _vlmevalkit(args: argparse.Namespace) -> None:
    from dft_mm.evaluation.vlm.kit.runner import run_vlmevalkit

    result = run_vlmevalkit(
        args.model, args.datasets, args.work_dir, vlmevalkit=args.vlmevalkit, kit_python=args.kit_python,
        judge=args.judge, judge_base_url=args.judge_base_url, use_vllm=args.use_vllm,
        attn_implementation=args.attn_implementation, api_nproc=args.api_nproc,
        system_prompt=args.system_prompt, model_name=args.model_name,
        min_pixels=args.min_pixels, max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens, mode=args.mode,
        data_root=args.data_root, out=args.out, parse_only=args.parse_only,
    )
    print(json.dumps(result["row"] if result["row"] is not None else {"predictions": args.work_dir}, indent=2))


def _run(args: argparse.Namespace) -> None:
    from dft_mm.evaluation.vlm.pipeline import run

    result = run(args.model, args.datasets, args.out, _generation_settings(args), judge=args.judge,
                 judge_model=args.judge_model, judge_workers=args.judge_workers, kit_python=args.kit_python)
    print(json.dumps(result["row"], indent=2))


def _install_kit(args: argparse.Namespace) -> None:
    from dft_mm.evaluation.vlm.kit.environment import install_kit

    python = install_kit(args.env, args.package, quiet=args.quiet)
    print(json.dumps({"kit_python": str(python)}))


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``generate``, ``score``, ``vlmevalkit``, ``install-kit`` and ``run`` under ``dft-mm eval vlm``."""
    verbs = parser.add_subparsers(dest="vlm_verb", required=True, metavar="VERB")

    generate = verbs.add_parser("generate", help="greedy predictions in VLMEvalKit's format (resumable)")
    _add_generation_options(generate)
    generate.add_argument("--dataset", required=True, help=_DATASET_HELP)
    generate.add_argument("--out", required=True, help="folder for <model>_<dataset>.tsv")
    generate.set_defaults(handler=_generate)

    score = verbs.add_parser("score", help="score a prediction file: VLMEvalKit's procedure with --judge, else the proxy")
    score.add_argument("--dataset", required=True, help=_DATASET_HELP + " (sets the metric semantics)")
    score.add_argument("--predictions", required=True, help="our .tsv or VLMEvalKit's <model>_<dataset>.xlsx/.tsv")
    score.add_argument("--out", required=True, help="folder for <dataset>_score.json/.csv and <dataset>_scored.tsv")
    _add_judge_options(score)
    score.set_defaults(handler=_score)

    adapter = verbs.add_parser("vlmevalkit", help="run VLMEvalKit itself (generation + its judged scoring), import its scores")
    _add_model_options(adapter)
    _add_kit_python(adapter)
    adapter.add_argument("--datasets", required=True, help="comma-separated VLMEvalKit dataset names")
    adapter.add_argument("--work-dir", required=True, help="VLMEvalKit --work-dir")
    adapter.add_argument("--data-root", default=None, help="VLMEvalKit's $LMUData (folder of its <dataset>.tsv files)")
    adapter.add_argument("--vlmevalkit", default=None, metavar="CHECKOUT",
                         help="run a VLMEvalKit checkout's run.py instead of the installed kit")
    adapter.add_argument("--judge", default=None, help="VLMEvalKit --judge: the judge model name (default: the kit's, "
                         "gpt-4o-mini; exact_matching is WeMath's judge-free mode)")
    adapter.add_argument("--judge-base-url", default=None, metavar="URL",
                         help="VLMEvalKit --judge-base-url, an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1); "
                              "the key is $OPENAI_API_KEY")
    adapter.add_argument("--use-vllm", action="store_true", help="VLMEvalKit --use-vllm (Qwen2VLChat generates with vLLM)")
    adapter.add_argument("--attn-implementation", default=None, metavar="IMPL",
                         help="attention for Qwen2VLChat's HF model (sdpa, eager, flash_attention_2; default: the kit's "
                              "flash_attention_2)")
    adapter.add_argument("--api-nproc", type=int, default=None, help="VLMEvalKit --api-nproc (parallel judge calls)")
    adapter.add_argument("--mode", choices=MODES, default="all",
                         help="VLMEvalKit --mode; eval rescores the work dir's predictions without loading the model")
    adapter.add_argument("--out", default=None, help="folder for <dataset>_score.json and vlm_table.csv/.md "
                         "(default: --work-dir)")
    adapter.add_argument("--parse-only", action="store_true", help="do not run VLMEvalKit; parse existing results")
    adapter.set_defaults(handler=_vlmevalkit)

    kit = verbs.add_parser("install-kit", help="create VLMEvalKit's own environment (ms-vlmeval, pinned)")
    kit.add_argument("--env", default=None, help="folder of the environment (default: <this environment>/vlmeval-kit)")
    kit.add_argument("--package", action="append", default=[], metavar="PKG",
                     help="also install PKG there (repeatable), e.g. --package vllm for the kit's use_vllm")
    kit.add_argument("--quiet", action="store_true", help="pass --quiet to pip")
    kit.set_defaults(handler=_install_kit)

    run = verbs.add_parser("run", help="generate + score all datasets, then the table (the paper's with --judge)")
    _add_generation_options(run)
    _add_judge_options(run)
    run.add_argument("--datasets", default=DEFAULT_DATASETS, help="comma-separated; " + _DATASET_HELP)
    run.add_argument("--out", required=True, help="folder for <dataset>/ results and vlm_table.csv/.md")
    run.set_defaults(handler=_run)
