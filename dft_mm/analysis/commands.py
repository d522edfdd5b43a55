"""CLI: ``dft-mm analyze tokens`` and ``dft-mm report`` (heavy imports inside the handlers)."""

from __future__ import annotations

import argparse


def _analyze_tokens(args: argparse.Namespace) -> None:
    from dft_mm.analysis.token_probs import analyze_tokens

    analyze_tokens(
        args.model, args.data, args.template, args.out, recipe=args.recipe, dataset_dir=args.dataset_dir,
        max_samples=args.max_samples,
        cutoff_len=args.cutoff_len, batch_size=args.batch_size, bins=args.bins, top_k=args.top_k, dtype=args.dtype,
        set_args=args.set,
    )


def _report(args: argparse.Namespace) -> None:
    from dft_mm.analysis.report import build_report

    build_report(args.run, args.out, reference_dir=args.reference_dir)


def register(parser) -> None:
    """Add ``analyze`` (verb ``tokens``) and ``report`` to the top-level subparsers."""
    analyze = parser.add_parser("analyze", help="analyses of trained models")
    verbs = analyze.add_subparsers(dest="analyze_command", required=True, metavar="VERB")
    tokens = verbs.add_parser(
        "tokens", help="probability of every supervised target token, per model (the paper's figure)",
        description="Teacher-forced probability of exactly the tokens LLaMA-Factory trains on, per model. Give "
                    "--data and --template, or --recipe (the training YAML). "
                    "Writes OUT/token_probs.json, OUT/token_probs.png and OUT/lowest_tokens.md; a rerun "
                    "with the same settings skips models already done.",
    )
    tokens.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                        help="a model or LLaMA-Factory output dir (LoRA adapters too); repeat for several")
    tokens.add_argument("--recipe", metavar="YAML",
                        help="the LLaMA-Factory training YAML: its dataset, template, cutoff_len and other data "
                             "keys are the defaults")
    tokens.add_argument("--data", metavar="FILE_OR_DATASET",
                        help="alpaca / sharegpt JSON or JSONL file, or a dataset name (with --dataset-dir)")
    tokens.add_argument("--dataset-dir", help="folder with dataset_info.json, when --data is a dataset name")
    tokens.add_argument("--template", help="LLaMA-Factory template, e.g. qwen, qwen2_vl")
    tokens.add_argument("--out", required=True, metavar="DIR")
    tokens.add_argument("--max-samples", type=int, help="first N samples only (LLaMA-Factory's max_samples)")
    tokens.add_argument("--cutoff-len", type=int, help="as in the training recipe (default: the recipe's, else 2048)")
    tokens.add_argument("--batch-size", type=int, default=2)
    tokens.add_argument("--bins", type=int, default=10, help="equal-width probability bins (default 10)")
    tokens.add_argument("--top-k", type=int, default=20, help="tokens listed per model in lowest_tokens.md")
    tokens.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                        help="model dtype (auto: LLaMA-Factory's choice for the model and device)")
    tokens.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any other LLaMA-Factory argument of the training recipe, e.g. image_max_pixels=262144")
    tokens.set_defaults(handler=_analyze_tokens)

    report = parser.add_parser(
        "report", help="training curves, eval tables and token analysis of runs, as report.md + report.html",
        description="Collects trainer_state.json, code_table.csv, vlm_table.csv and token_probs.json found "
                    "below each run dir; deltas are against the first run; the paper's numbers are shown "
                    "as labelled reference rows.",
    )
    report.add_argument("--run", action="append", required=True, metavar="NAME=DIR", help="repeat for several runs")
    report.add_argument("--out", required=True, metavar="DIR")
    report.add_argument("--reference-dir", help="folder of reference CSVs (default: the repo's eval/reference)")
    report.set_defaults(handler=_report)
