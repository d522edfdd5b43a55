"""The ``dft-mm`` command.

Each command group lives in its own module exposing ``register(subparsers)``; a group's
heavy imports happen inside its handlers, so ``dft-mm --help`` stays fast.
Handlers return an exit code (``int``) or ``None`` for success.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dft_mm.errors import UserError

COMMAND_MODULES = (
    "dft_mm.llamafactory.commands",  # dft-mm train
    "dft_mm.data.commands",  # dft-mm data ultrafeedback|wethink
    "dft_mm.evaluation.commands",  # dft-mm eval code|vlm ...
    "dft_mm.analysis.commands",  # dft-mm analyze tokens, dft-mm report
    "dft_mm.bench.commands",  # dft-mm bench head|step|train
    "dft_mm.demo.commands",  # dft-mm demo, dft-mm tiny
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dft-mm", description="Dynamic Fine-Tuning for LLaMA-Factory.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except UserError as err:
        print(f"dft-mm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
