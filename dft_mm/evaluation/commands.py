"""``dft-mm eval code ...`` and ``dft-mm eval vlm ...``: each domain registers its own verbs."""

from __future__ import annotations


def register(subparsers) -> None:
    from dft_mm.evaluation.code import commands as code_commands
    from dft_mm.evaluation.vlm import commands as vlm_commands

    parser = subparsers.add_parser("eval", help="generate, execute and score benchmarks")
    domains = parser.add_subparsers(dest="domain", required=True, metavar="DOMAIN")
    code_commands.register(domains.add_parser("code", help="HumanEval, HumanEval+, MultiPL-E"))
    vlm_commands.register(domains.add_parser("vlm", help="MathVerse, MathVision, WeMath"))
