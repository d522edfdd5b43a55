"""``dft-mm data ultrafeedback|wethink``: dataset converters for the paper's setups.

Converter modules import only light dependencies at module level (tqdm); ``datasets``,
``pyarrow`` and PIL load when a conversion needs them.
"""

from __future__ import annotations

from dft_mm.data import ultrafeedback, wethink


def register(subparsers) -> None:
    """Add the ``data`` command and its sub-verbs to the top-level ``subparsers``."""
    parser = subparsers.add_parser("data", help="convert public datasets into LLaMA-Factory training data")
    verbs = parser.add_subparsers(dest="data_command", required=True, metavar="DATASET")
    ultrafeedback.register(verbs)
    wethink.register(verbs)
