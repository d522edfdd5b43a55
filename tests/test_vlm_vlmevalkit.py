"""VLMEvalKit adapter pieces that need no kit process: the --config JSON, the kit's interpreter
and environment, and the paper / proxy tables. (The kit itself runs in tests/test_vlm_kit.py.)"""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.kit.environment import KIT_PYTHON_ENV, find_kit_python, kit_requirements
from dft_mm.evaluation.vlm.prompts import WETHINK_SYSTEM_PROMPT
from dft_mm.evaluation.vlm.table import TABLE_COLUMNS, table_row, write_vlm_table
from dft_mm.evaluation.vlm.kit.runner import run_vlmevalkit, vlmevalkit_arguments, vlmevalkit_config


def test_config_matches_vlmevalkit_schema():
    config = vlmevalkit_config("/ckpt/qwen2_5_vl_dft", "dft", ["MathVerse_MINI_Vision_Only", "MathVision", "WeMath"])
    assert config["model"] == {"dft": {
        "class": "Qwen2VLChat", "model_path": "/ckpt/qwen2_5_vl_dft", "min_pixels": 1280 * 28 * 28,
        "max_pixels": 16384 * 28 * 28, "max_new_tokens": 2048, "use_custom_prompt": False,
        "system_prompt": WETHINK_SYSTEM_PROMPT,
    }}
    assert config["data"] == {
        "MathVerse_MINI_Vision_Only": {"class": "MathVerse", "dataset": "MathVerse_MINI_Vision_Only"},
        "MathVision": {"class": "MathVision", "dataset": "MathVision"},
        "WeMath": {"class": "WeMath", "dataset": "WeMath"},
    }
    assert "system_prompt" not in vlmevalkit_config("/c", "m", ["WeMath"], system_prompt=None)["model"]["m"]
    with pytest.raises(UserError, match="unknown: held_out.tsv"):
        vlmevalkit_config("/ckpt", "dft", ["held_out.tsv"])


def test_eval_mode_names_model_and_data_instead_of_the_config():
    """The kit builds a config's model (on a GPU) even to evaluate; eval mode must not."""
    flags = vlmevalkit_arguments("c.json", "dft", ["WeMath"], "work", mode="eval", judge="exact_matching")
    assert flags[:6] == ["--model", "dft", "--data", "WeMath", "--mode", "eval"] and "--config" not in flags
    with pytest.raises(UserError, match="--mode 'train'"):
        vlmevalkit_arguments("c.json", "dft", ["WeMath"], "work", mode="train")


def test_kit_requirements_are_the_pinned_extra_plus_this_environments_torch():
    requirements = kit_requirements()
    assert "ms-vlmeval==0.0.20" in requirements and "google-genai==2.8.0" in requirements
    assert {"torch==2.14.1", "torchvision==0.29.1", "transformers==5.5.4"} <= set(requirements)


def test_dev_environment_keeps_llamaboard_pins_and_pip_check_clean():
    """The kit lives in its own environment: this one keeps gradio's pydantic pin and a clean pip check."""
    from importlib.metadata import version
    from importlib.util import find_spec

    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert find_spec("vlmeval") is None  # importing it would switch off SSL checks in this process
    assert version("gradio") == "5.50.0" and tuple(map(int, version("pydantic").split(".")[:2])) <= (2, 12)


def test_the_kit_environment_shares_this_environments_torch():
    """`make setup`'s kit environment (.venv/vlmeval-kit) imports this environment's torch and
    transformers (no second ~5 GB copy) and its own pins where they differ (pandas<3)."""
    from dft_mm.evaluation.vlm.kit.environment import SHARED_PTH, default_kit_env

    kit = find_kit_python()
    probe = ("import torch, transformers, pandas, vlmeval;"
             "print(torch.__file__); print(transformers.__file__); print(pandas.__version__); print(vlmeval.__file__)")
    done = subprocess.run([kit, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    torch_file, transformers_file, pandas_version, vlmeval_file = done.stdout.split()
    import sysconfig

    here = sysconfig.get_paths()["purelib"]
    assert torch_file.startswith(here) and transformers_file.startswith(here), (torch_file, here)
    assert not vlmeval_file.startswith(here) and int(pandas_version.split(".")[0]) < 3
    assert any(default_kit_env().glob(f"lib/python*/site-packages/{SHARED_PTH}"))


def test_kit_python_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(KIT_PYTHON_ENV, str(tmp_path / "missing" / "python"))
    with pytest.raises(UserError, match="does not exist"):
        find_kit_python()
    monkeypatch.setenv(KIT_PYTHON_ENV, sys.executable)
    assert find_kit_python() == sys.executable
    assert find_kit_python(str(sys.executable)) == sys.executable


def test_missing_checkout_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run.py not found"):
        run_vlmevalkit("Qwen/Qwen2.5-VL-3B-Instruct", "WeMath", tmp_path / "work", vlmevalkit=tmp_path / "nowhere")


def _result(scorer, **metrics):
    return {**metrics, "scorer": scorer, "judge": "j" if scorer == "vlmevalkit" else None}


def test_paper_and_proxy_tables_are_separate_files(tmp_path):
    judged = table_row("base", {"WeMath": _result("vlmevalkit", score_strict=4.1)})
    csv_path, md_path = write_vlm_table(tmp_path, [judged])
    assert csv_path.name == "vlm_table.csv"
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == TABLE_COLUMNS and rows[1] == ["base", "", "", "", "", "", "4.10"]
    assert md_path.read_text().splitlines()[-1] == "| base |  |  |  |  |  | 4.10 |"
    proxy = table_row("base", {"WeMath": _result("judge-free", score_strict=9.0)})
    assert write_vlm_table(tmp_path, [proxy])[0].name == "vlm_proxy_table.csv"
    assert "not the paper's metric" in (tmp_path / "vlm_proxy_table.md").read_text()
    with pytest.raises(UserError, match="one scorer"):
        write_vlm_table(tmp_path, [judged, proxy])
    with pytest.raises(UserError, match="cannot make one table row"):
        table_row("base", {"WeMath": _result("vlmevalkit", score_strict=1.0), "MathVision": _result("judge-free")})
    with pytest.raises(UserError, match="cannot make one table row"):
        table_row("old", {"WeMath": {"score_strict": 1.0}})  # no scorer recorded


def test_mathvision_column_is_the_full_set_unless_the_mini_is_asked_for():
    results = {"MathVision_MINI": _result("vlmevalkit", Overall=30.0),
               "MathVerse_MINI_Vision_Only_cot": _result("vlmevalkit", Overall=12.0)}
    row = table_row("dft", results)
    assert row["MathVision"] is None and row["MathVerse Vision Only"] is None  # no silent MINI / _cot stand-ins
    mini = table_row("dft", results, mathvision="MathVision_MINI")
    assert mini["MathVision"] == 30.0 and mini["model"] == "dft [MathVision_MINI]"
    full = table_row("dft", {**results, "MathVision": _result("vlmevalkit", Overall=21.25)})
    assert full["MathVision"] == 21.25 and full["model"] == "dft"
