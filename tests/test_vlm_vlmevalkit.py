"""VLMEvalKit adapter: the --config JSON, parsing VLMEvalKit's score CSVs (fixtures written
in its exact formats), and the paper table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from dft_mm.cli import main
from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.table import TABLE_COLUMNS, table_row, write_vlm_table
from dft_mm.evaluation.vlm.vlmevalkit import (
    parse_mathverse_score,
    parse_vlmevalkit_results,
    parse_wemath_score,
    run_vlmevalkit,
    vlmevalkit_config,
)

FIXTURES = Path(__file__).parent / "fixtures" / "vlm" / "vlmevalkit"
MODEL = "Qwen2.5-VL-3B-Instruct"
RUN = FIXTURES / "work" / MODEL / "T20250301_G1a2b3c4"


def test_config_matches_vlmevalkit_schema():
    config = vlmevalkit_config("/ckpt/qwen2_5_vl_dft", "dft", ["MathVerse_MINI_Vision_Only", "MathVision", "WeMath"])
    assert config["model"] == {"dft": {
        "class": "Qwen2VLChat", "model_path": "/ckpt/qwen2_5_vl_dft", "min_pixels": 1280 * 28 * 28,
        "max_pixels": 16384 * 28 * 28, "max_new_tokens": 2048, "use_custom_prompt": False,
    }}
    assert config["data"] == {
        "MathVerse_MINI_Vision_Only": {"class": "MathVerse", "dataset": "MathVerse_MINI_Vision_Only"},
        "MathVision": {"class": "MathVision", "dataset": "MathVision"},
        "WeMath": {"class": "WeMath", "dataset": "WeMath"},
    }
    with pytest.raises(UserError, match="unknown: held_out.tsv"):
        vlmevalkit_config("/ckpt", "dft", ["held_out.tsv"])


def test_parse_each_score_format():
    mathverse = parse_mathverse_score(RUN / f"{MODEL}_MathVerse_MINI_gpt-4o-mini_score.csv")
    assert mathverse == pytest.approx({"Overall": 32.36, "Vision Intensive": 32.99, "Vision Dominant": 31.73})
    wemath = parse_wemath_score(RUN / f"{MODEL}_WeMath_score.csv")
    assert wemath["score_strict"] == 23.71 and wemath["RM_strict"] == 55.17 and wemath["S3"] == 27.27
    assert set(wemath) == {"score_strict", "score_loose", "IK", "IG", "CM_strict", "CM_loose", "RM_strict",
                           "RM_loose", "S1", "S2", "S3"}


def test_results_of_a_work_dir_and_table():
    results = parse_vlmevalkit_results(FIXTURES / "work" / MODEL, MODEL)
    assert sorted(results) == ["MathVerse_MINI", "MathVerse_MINI_Vision_Only", "MathVision", "WeMath"]
    assert results["MathVision"]["Overall"] == pytest.approx(21.25)
    row = table_row(MODEL, results)
    assert row == pytest.approx({
        "model": MODEL, "MathVerse Vision Only": 25.0, "MathVerse Vision Intensive": 32.99,
        "MathVerse Vision Dominant": 31.73, "MathVerse Overall": 32.36, "MathVision": 21.25, "WeMath": 23.71,
    })


def test_table_files_have_the_shared_columns(tmp_path):
    csv_path, md_path = write_vlm_table(tmp_path, [table_row("base", {"WeMath": {"score_strict": 4.1}})])
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == TABLE_COLUMNS
    assert rows[1] == ["base", "", "", "", "", "", "4.10"]
    assert md_path.read_text().splitlines()[2] == "| base |  |  |  |  |  | 4.10 |"


def test_cli_parse_only_writes_config_and_table(tmp_path):
    work = tmp_path / "work"
    shutil.copytree(FIXTURES / "work", work)
    model = tmp_path / "dft_checkpoint"
    model.mkdir()
    code = main(["eval", "vlm", "vlmevalkit", "--model", str(model), "--model-name", MODEL, "--datasets",
                 "MathVerse_MINI,MathVision,WeMath", "--vlmevalkit", str(tmp_path / "absent"), "--work-dir",
                 str(work), "--parse-only"])
    assert code == 0
    config = json.loads((work / "dft_mm_vlmevalkit_config.json").read_text())
    # the checkpoint path gains a Qwen2.5 marker so Qwen2VLChat loads the 2.5 architecture
    model_path = Path(config["model"][MODEL]["model_path"])
    assert model_path.name == "dft_checkpoint-qwen2_5-vl" and model_path.resolve() == model.resolve()
    table = (work / "vlm_table.csv").read_text().splitlines()
    assert table[1] == f"{MODEL} (VLMEvalKit),25.00,32.99,31.73,32.36,21.25,23.71"


def test_missing_checkout_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run.py not found"):
        run_vlmevalkit("Qwen/Qwen2.5-VL-3B-Instruct", "WeMath", tmp_path / "nowhere", tmp_path / "work")


STAND_IN_RUN_PY = '''
"""Stands in for VLMEvalKit's run.py: same flags; 'evaluates' by copying recorded score files."""
import argparse, json, pathlib, shutil, sys
parser = argparse.ArgumentParser()
parser.add_argument("--config"); parser.add_argument("--work-dir"); parser.add_argument("--judge")
parser.add_argument("--reuse", action="store_true")
args = parser.parse_args()
config = json.loads(pathlib.Path(args.config).read_text())
(name, model), = config["model"].items()
assert model["class"] == "Qwen2VLChat" and args.reuse, config
pathlib.Path("called.json").write_text(json.dumps({"judge": args.judge, "data": sorted(config["data"])}))
shutil.copytree(sys.argv[0].replace("run.py", "recorded"), pathlib.Path(args.work_dir) / name / "T20250302_Gdeadbeef")
'''


def test_runs_the_checkout_and_reads_its_results(tmp_path):
    checkout = tmp_path / "VLMEvalKit"
    shutil.copytree(RUN, checkout / "recorded")
    (checkout / "run.py").write_text(STAND_IN_RUN_PY)
    result = run_vlmevalkit("Qwen/Qwen2.5-VL-3B-Instruct", "MathVision,WeMath", checkout, tmp_path / "work",
                            judge="gpt-4o-mini", model_name=MODEL, out=tmp_path / "table")
    called = json.loads((checkout / "called.json").read_text())  # run.py ran inside the checkout
    assert called == {"judge": "gpt-4o-mini", "data": ["MathVision", "WeMath"]}
    assert result["row"]["MathVision"] == pytest.approx(21.25) and result["row"]["WeMath"] == 23.71
    assert (tmp_path / "table" / "vlm_table.md").is_file()


def test_failed_run_is_a_user_error(tmp_path):
    checkout = tmp_path / "VLMEvalKit"
    checkout.mkdir()
    (checkout / "run.py").write_text("import sys\nsys.exit(1)\n")
    with pytest.raises(UserError, match="VLMEvalKit failed"):
        run_vlmevalkit("Qwen/Qwen2.5-VL-3B-Instruct", "WeMath", checkout, tmp_path / "work")
