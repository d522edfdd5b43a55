"""Shared fixtures: offline environment, tiny models built once per session, shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "WANDB_DISABLED": "true"}
os.environ.update(OFFLINE_ENV)


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the checkout (CI lays it there), or ``$DFT_MM_SHARED_DATA``."""
    candidates = [os.environ.get("DFT_MM_SHARED_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def multipl_e_dir() -> Path:
    """MultiPL-E HumanEval JSONL files (humaneval-<lang>.jsonl); skips when absent."""
    root = shared_data_dir()
    if root is None or not (root / "multipl-e").is_dir():
        pytest.skip("MultiPL-E data not found: expected ../shared/data/multipl-e beside the checkout "
                    "or DFT_MM_SHARED_DATA=<dir containing multipl-e/>")
    return root / "multipl-e"


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2 with tokenizer (see dft_mm.demo.tiny)."""
    from dft_mm.demo.tiny import build_tiny_text

    return build_tiny_text(tmp_path_factory.mktemp("tiny_text"))


@pytest.fixture(scope="session")
def tiny_vl_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL with tokenizer and processor (see dft_mm.demo.tiny)."""
    from dft_mm.demo.tiny import build_tiny_vl

    return build_tiny_vl(tmp_path_factory.mktemp("tiny_vl"))


@pytest.fixture(scope="session")
def text_data(tmp_path_factory) -> Path:
    """8 synthetic function-writing problems as a LLaMA-Factory dataset (``synthetic_code``)."""
    from dft_mm.demo.synthetic import text_problems, write_text_training_set

    out = tmp_path_factory.mktemp("text_data")
    write_text_training_set(text_problems(8, seed=0), out)
    return out


@pytest.fixture(scope="session")
def vl_data(tmp_path_factory) -> Path:
    """4 synthetic shape images with their colours as a LLaMA-Factory dataset (``synthetic_colours``)."""
    from dft_mm.demo.synthetic import vl_problems, write_vl_training_set

    out = tmp_path_factory.mktemp("vl_data")
    write_vl_training_set(vl_problems(4, seed=0, image_dir=out / "images"), out)
    return out
