"""Runs inside VLMEvalKit's interpreter, started by path from :mod:`dft_mm.evaluation.vlm.kit.environment`
(it imports nothing from dft_mm, so the kit's environment needs no dft_mm).

Two verbs::

    # the kit's own evaluation of one prediction file (its prompts, judge calls, caches, files)
    python worker.py evaluate --benchmark MathVerse --dataset MathVerse_MINI \\
        --eval-file W/model_MathVerse_MINI.tsv --judge gpt-4o-mini \\
        [--api-base http://127.0.0.1:8000/v1/chat/completions] [--nproc 4] [--retry 3]

    # the kit's own runner (installed package or a checkout's run.py), all its flags after --
    python worker.py run [--attn-implementation sdpa] [--checkout DIR] -- --config c.json --work-dir W

``evaluate`` calls the dataset class's ``evaluate`` (``MathVerse.evaluate``,
``MathVision.evaluate``, ``WeMath.evaluate``) on an instance made without loading the
benchmark TSV: scoring reads only the prediction file, which carries the dataset's columns
(WeMath's answer/question check uses the prediction file's own rows). The kit writes its files
next to ``--eval-file``.

``run --attn-implementation`` replaces the ``attn_implementation`` that the kit's
``Qwen2VLChat`` hard-codes (``flash_attention_2``) when it loads a Qwen2-VL / Qwen2.5-VL model.
"""

import argparse
import runpy
import sys
from pathlib import Path

# This folder holds dft_mm modules with plain names (files.py, score.py, environment.py) that
# would shadow a library of the same name the kit imports: keep it off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

_QWEN_VL_CLASSES = ("Qwen2_5_VLForConditionalGeneration", "Qwen2VLForConditionalGeneration")


def evaluate(args: argparse.Namespace) -> None:
    from vlmeval.dataset import MathVerse, MathVision, WeMath
    from vlmeval.smp import load

    classes = {"MathVerse": MathVerse, "MathVision": MathVision, "WeMath": WeMath}
    judge_kwargs = {"model": args.judge, "nproc": args.nproc}
    if args.api_base:
        judge_kwargs["api_base"] = args.api_base
    if args.retry is not None:
        judge_kwargs["retry"] = args.retry
    cls = classes[args.benchmark]
    dataset = cls.__new__(cls)
    dataset.dataset_name = args.dataset
    if args.benchmark == "WeMath":
        dataset.data = load(args.eval_file)
    print(dataset.evaluate(args.eval_file, **judge_kwargs), flush=True)


def _force_attention(implementation: str) -> None:
    import transformers

    for name in _QWEN_VL_CLASSES:
        cls = getattr(transformers, name)
        original = cls.from_pretrained

        def from_pretrained(*args, _original=original, **kwargs):
            kwargs["attn_implementation"] = implementation
            return _original(*args, **kwargs)

        cls.from_pretrained = from_pretrained
    print(f"dft_mm: Qwen2-VL / Qwen2.5-VL load with attn_implementation={implementation!r} "
          "(VLMEvalKit's Qwen2VLChat hard-codes flash_attention_2)", flush=True)


def run(args: argparse.Namespace) -> None:
    if args.attn_implementation:
        _force_attention(args.attn_implementation)
    forwarded = args.kit_args[1:] if args.kit_args[:1] == ["--"] else args.kit_args
    if args.checkout:
        run_py = Path(args.checkout) / "run.py"
        sys.path.insert(0, str(run_py.parent))
        sys.argv = [str(run_py), *forwarded]
        runpy.run_path(str(run_py), run_name="__main__")
    else:
        sys.argv = ["vlmeval.run", *forwarded]
        runpy.run_module("vlmeval.run", run_name="__main__", alter_sys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    scorer = verbs.add_parser("evaluate")
    scorer.add_argument("--benchmark", required=True, choices=("MathVerse", "MathVision", "WeMath"))
    scorer.add_argument("--dataset", required=True)
    scorer.add_argument("--eval-file", required=True)
    scorer.add_argument("--judge", required=True)
    scorer.add_argument("--api-base", default=None)
    scorer.add_argument("--nproc", type=int, default=4)
    scorer.add_argument("--retry", type=int, default=None)
    scorer.set_defaults(handler=evaluate)
    runner = verbs.add_parser("run")
    runner.add_argument("--attn-implementation", default=None)
    runner.add_argument("--checkout", default=None)
    runner.add_argument("kit_args", nargs=argparse.REMAINDER)
    runner.set_defaults(handler=run)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
