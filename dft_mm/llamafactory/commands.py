"""``dft-mm train CONFIG.yaml [key=value ...]``: the stock ``llamafactory-cli train`` with the
dft_mm patch guaranteed on (also when ``DFT_MM_DISABLE=1`` is set in the shell)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dft_mm.errors import UserError


def train(config: str, overrides: list[str]) -> int:
    """Run ``llamafactory-cli train config overrides...`` with the hook enabled; return its exit code."""
    if not Path(config).is_file():
        raise UserError(f"training config {config} not found; pass a LLaMA-Factory YAML file.")
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise UserError(f"overrides must be key=value (e.g. sft_loss=dft); got {' '.join(bad)}.")
    # This environment's scripts first (also for torchrun, which llamafactory-cli starts).
    scripts = Path(sys.executable).parent
    path = f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"
    cli = shutil.which("llamafactory-cli", path=path)
    if cli is None:
        raise UserError("llamafactory-cli not found in this environment: pip install llamafactory==0.9.5 (the version dft_mm patches).")
    env = {key: value for key, value in os.environ.items() if key != "DFT_MM_DISABLE"}
    return subprocess.call([cli, "train", config, *overrides], env={**env, "PATH": path})


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="llamafactory-cli train with the DFT loss keys")
    parser.add_argument("config", help="LLaMA-Factory training YAML")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as llamafactory-cli accepts")
    parser.set_defaults(handler=lambda args: train(args.config, args.overrides))
