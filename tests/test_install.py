"""Installing dft_mm into an environment that satisfies its ranges changes no installed package.

The environment is `make test`'s floor one (``.venv/floor``: the oldest transformers the ranges
admit, with its huggingface-hub and tokenizers, in front of ``.venv``; ``scripts/floor_env.sh``).
pip resolves this source tree's requirements there with ``--dry-run --report``: the only package
it would install is dft_mm itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOOR = ROOT / ".venv" / "floor"


def dry_run(requirement: str, tmp_path: Path) -> list[tuple[str, str]]:
    """``(name, version)`` of every package ``pip install --dry-run requirement`` would install
    in the floor environment."""
    if not (FLOOR / ".pins").is_file():
        pytest.fail(f"{FLOOR} is missing: run scripts/floor_env.sh (scripts/setup.sh does).")
    report = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    env = {**os.environ, "PYTHONPATH": str(FLOOR), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                           requirement], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [(item["metadata"]["name"], item["metadata"]["version"]) for item in json.loads(report.read_text())["install"]]


@pytest.mark.e2e
def test_pip_install_into_the_floor_environment_replaces_nothing(tmp_path):
    # pip sees the floor: a pin on the tested transformers would replace it (so this check can fail)
    assert ("transformers", "5.5.4") in dry_run("transformers==5.5.4", tmp_path)
    installs = dry_run(str(ROOT), tmp_path)
    assert [name.replace("-", "_").lower() for name, _ in installs] == ["dft_mm"], installs
