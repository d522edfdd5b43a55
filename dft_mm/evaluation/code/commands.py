"""``dft-mm eval code generate | score | run`` (HumanEval, HumanEval+, MultiPL-E).

Python equivalents (same arguments): :func:`dft_mm.evaluation.code.generation.generate`,
:func:`dft_mm.evaluation.code.scoring.score`, :func:`dft_mm.evaluation.code.pipeline.run`.
Heavy imports happen inside the handlers so ``dft-mm --help`` stays fast.
"""

from __future__ import annotations

BENCHMARK_HELP = ("humaneval | humaneval+ | multipl-e-{python,cpp,java,php,ts,cs,sh,js}")


def _add_generation_args(parser) -> None:
    parser.add_argument("--model", required=True, help="local checkpoint dir (HF format)")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    parser.add_argument("--n-samples", type=int, default=1, help="samples per problem (default 1)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling when temperature > 0")
    parser.add_argument("--chat", action="store_true", help="prompt through the tokenizer's chat template")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: 768 for HumanEval(+) (EvalPlus), 512 for MultiPL-E")
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems (smoke tests)")


def _generation_settings(args):
    """The generation options, built once (``run`` has no ``--top-p``: its default)."""
    from dataclasses import fields

    from dft_mm.evaluation.code.generation import GenerationSettings

    return GenerationSettings(**{f.name: getattr(args, f.name) for f in fields(GenerationSettings) if hasattr(args, f.name)})


def _generate(args) -> int:
    from dft_mm.evaluation.code.generation import generate

    path = generate(args.model, args.benchmark, args.out, _generation_settings(args), data=args.data)
    print(f"samples: {path}")
    return 0


def _score(args) -> int:
    from dft_mm.evaluation.code.scoring import score

    score(args.benchmark, args.samples, args.out, workers=args.workers, data=args.data,
          evalplus_semantics=args.evalplus_semantics)
    return 0


def _run(args) -> int:
    from dft_mm.evaluation.code.pipeline import run

    run(args.model, args.out, args.benchmarks, _generation_settings(args), workers=args.workers,
        multipl_e_dir=args.multipl_e_dir, humaneval_plus=args.humaneval_plus, model_name=args.model_name,
        evalplus_semantics=args.evalplus_semantics)
    return 0


def _add_semantics_arg(parser) -> None:
    parser.add_argument("--evalplus-semantics", choices=("release", "fixed"), default="release",
                        help="HumanEval+: 'release' = EvalPlus 0.3.1 as published (its find_zero oracle fails "
                             "HumanEval/32 always); 'fixed' = with upstream's fix of that oracle (default: %(default)s)")


def register(parser) -> None:
    """Add ``generate``, ``score`` and ``run`` under the ``dft-mm eval code`` parser."""
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    gen = verbs.add_parser("generate", help="completions as EvalPlus/MultiPL-E samples JSONL (resumable)")
    _add_generation_args(gen)
    gen.add_argument("--benchmark", required=True, help=BENCHMARK_HELP)
    gen.add_argument("--out", required=True, help="directory; writes samples.jsonl there")
    gen.add_argument("--data", default=None, help="local problems file (MultiPL-E JSONL or HumanEvalPlus.jsonl)")
    gen.set_defaults(handler=_generate)

    sc = verbs.add_parser("score", help="execute samples in the sandbox; EvalPlus/MultiPL-E results + pass@k")
    sc.add_argument("--benchmark", required=True, help=BENCHMARK_HELP)
    sc.add_argument("--samples", required=True, help="samples JSONL: {task_id|name, completion|solution}")
    sc.add_argument("--out", required=True, help="directory for results and <benchmark>_score.json")
    sc.add_argument("--workers", type=int, default=None, help="parallel sandboxes (default: CPU count)")
    sc.add_argument("--data", default=None, help="local problems file (MultiPL-E JSONL or HumanEvalPlus.jsonl)")
    _add_semantics_arg(sc)
    sc.set_defaults(handler=_score)

    rn = verbs.add_parser("run", help="generate + score all benchmarks, then the paper's table (CSV + Markdown)")
    _add_generation_args(rn)
    rn.add_argument("--benchmarks", default="humaneval,humaneval+,multipl-e",
                    help="comma list; 'multipl-e' = all eight languages (default: %(default)s)")
    rn.add_argument("--out", required=True, help="directory: <benchmark>/ subdirs and code_table.{csv,md}")
    rn.add_argument("--workers", type=int, default=None, help="parallel sandboxes (default: CPU count)")
    rn.add_argument("--multipl-e-dir", default=None, help="dir with local humaneval-<lang>.jsonl (MultiPL-E format)")
    rn.add_argument("--humaneval-plus", default=None, help="EvalPlus HumanEvalPlus.jsonl (else $HUMANEVAL_OVERRIDE_PATH)")
    rn.add_argument("--model-name", default=None, help="table row name (default: the model dir's name)")
    _add_semantics_arg(rn)
    rn.set_defaults(handler=_run)
