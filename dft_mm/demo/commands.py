"""``dft-mm demo`` (what ``make demo`` runs, :mod:`dft_mm.demo.run`) and ``dft-mm tiny`` (one
tiny offline model, :mod:`dft_mm.demo.tiny`)."""

from __future__ import annotations

import argparse
import json

from dft_mm.demo.plan import METHODS, PLANS
from dft_mm.demo.tiny import TEXT_FAMILIES
from dft_mm.errors import UserError

def register(subparsers) -> None:
    _register_demo(subparsers)
    _register_tiny(subparsers)


def _register_demo(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="SFT, DFT and its fixes on tiny offline models, two regimes, 3 seeds "
                                                "(what `make demo` runs)")
    parser.add_argument("--out", help="output directory (default: demo_out, or demo_select with --select)")
    parser.add_argument("--plan", choices=sorted(PLANS), default="full", help="full (the demo) or smoke (tests)")
    parser.add_argument("--seed", type=int, default=0, help="first training seed; the plan's seeds follow it (default 0)")
    parser.add_argument("--jobs", type=int, help="trainings at a time, one CPU thread each (default: CPUs, at most 4)")
    parser.add_argument("--select", action="store_true",
                        help="run the protocol's selection on the validation split instead of the demo")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"with --select: the methods to select for (comma-separated, from {', '.join(METHODS)})")

    def handler(args) -> int:
        from dft_mm.demo.run import run_demo, select_settings

        if args.select:
            methods = tuple(args.methods.split(","))
            unknown = sorted(set(methods) - set(METHODS))
            if unknown:
                raise UserError(f"unknown --methods {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
            select_settings(args.out or "demo_select", args.plan, args.seed, args.jobs, methods=methods)
            return 0
        return run_demo(args.out or "demo_out", args.plan, args.seed, args.jobs)

    parser.set_defaults(handler=handler)


def _build_tiny(args: argparse.Namespace) -> None:
    from dft_mm.demo.tiny import build_tiny_text, build_tiny_vl

    common = dict(hidden_size=args.hidden_size, num_layers=args.num_layers, seed=args.seed)
    if args.kind == "vl":
        out = build_tiny_vl(args.out, **common)
    else:
        out = build_tiny_text(args.out, family=args.family, tie_word_embeddings=args.tied, **common)
    print(json.dumps({"kind": args.kind, "path": str(out)}))


def _register_tiny(subparsers) -> None:
    parser = subparsers.add_parser("tiny", help="build a tiny offline Qwen2 / Qwen2.5-VL model")
    parser.add_argument("--kind", choices=("text", "vl"), required=True)
    parser.add_argument("--family", choices=TEXT_FAMILIES, default="qwen2", help="text model family (default qwen2)")
    parser.add_argument("--tied", action="store_true", help="text model: tie lm_head to the input embeddings")
    parser.add_argument("--out", required=True, help="directory to write the model to")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=_build_tiny)
