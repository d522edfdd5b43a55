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


def dry_run(requirement: str, tmp_path: Path, *front: Path) -> list[tuple[str, str]]:
    """``(name, version)`` of every package ``pip install --dry-run requirement`` would install
    in the floor environment (with the folders ``front`` in front of it)."""
    if not (FLOOR / ".pins").is_file():
        pytest.fail(f"{FLOOR} is missing: run scripts/floor_env.sh (scripts/setup.sh does).")
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*front, FLOOR])), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
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


def _as_git_main(tmp_path: Path) -> Path:
    """A folder whose LLaMA-Factory metadata is the installed 0.9.5's with the version its git main
    reports (0.9.6.dev0): what pip sees in an environment where LLaMA-Factory came from git."""
    import importlib.metadata

    installed = importlib.metadata.distribution("llamafactory")
    folder = tmp_path / "git-main"
    info = folder / "llamafactory-0.9.6.dev0.dist-info"
    info.mkdir(parents=True)
    metadata = installed.read_text("METADATA")
    assert "\nVersion: 0.9.5\n" in metadata
    (info / "METADATA").write_text(metadata.replace("\nVersion: 0.9.5\n", "\nVersion: 0.9.6.dev0\n"))
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    return folder


@pytest.mark.e2e
def test_a_llamafactory_from_git_main_is_kept(tmp_path):
    """LLaMA-Factory installed from its git main (0.9.6.dev0) stays: dft_mm decides at run time
    whether it can patch it (tests/test_upstream_version.py), pip replaces nothing."""
    git_main = _as_git_main(tmp_path)
    assert ("llamafactory", "0.9.5") in dry_run("llamafactory==0.9.5", tmp_path, git_main)  # pip sees 0.9.6.dev0
    installs = dry_run(str(ROOT), tmp_path, git_main)
    assert [name.replace("-", "_").lower() for name, _ in installs] == ["dft_mm"], installs
