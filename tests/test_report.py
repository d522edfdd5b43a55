"""`dft-mm report` on hand-written run dirs in the exact formats our commands write."""

from __future__ import annotations

import base64
import csv
import re
import shutil
from pathlib import Path

import pytest

from dft_mm.analysis.report import build_report
from dft_mm.analysis.tables import CODE_COLUMNS, VLM_COLUMNS
from dft_mm.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "report" / "run_dirs"
REFERENCE = Path(__file__).resolve().parents[1] / "eval" / "reference"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(markdown: str, *first_cells: str) -> list[str]:
    """Cells of the first Markdown table row starting with ``first_cells``."""
    prefix = "| " + " | ".join(first_cells) + " |"
    line = next(line for line in markdown.splitlines() if line.startswith(prefix))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


@pytest.fixture
def report(tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    out = tmp_path / "report"
    build_report([f"sft={FIXTURES / 'sft'}", f"dft={FIXTURES / 'dft'}", f"empty={empty}"], str(out),
                 reference_dir=str(REFERENCE))
    return out, (out / "report.md").read_text()


def test_tables_in_paper_order_with_deltas_and_reference_rows(report):
    _, md = report
    header = next(line for line in md.splitlines() if line.startswith("| run | model | HumanEval"))
    assert header == "| run | model | " + " | ".join(CODE_COLUMNS) + " |"
    assert "| run | model | " + " | ".join(VLM_COLUMNS) + " |" in md
    assert _row(md, "sft", "tiny-sft")[2:5] == ["12.50", "10.00", "25.00"]
    assert _row(md, "dft", "tiny-dft")[2:5] == ["15.00 (+2.50)", "12.50 (+2.50)", "30.00 (+5.00)"]
    assert _row(md, "dft", "tiny-dft")[5] == "—"  # C++ not run: missing, not zero
    assert _row(md, "reference (paper)", "Qwen2.5-Coder-7B DFT")[2:4] == ["67.7", "59.8"]
    assert _row(md, "reference (paper)", "Qwen2.5-VL-3B SFT")[5:] == ["35.66", "21.02", "23.33"]
    assert "published numbers" in md


def test_missing_pieces_are_shown_as_missing_not_zero(report):
    _, md = report
    rows = [line for line in md.splitlines() if line.startswith("| empty |")]
    assert len(rows) == 3  # curves, code and multimodal tables
    assert all(set(cell.strip() for cell in row.strip("|").split("|")[1:]) == {"—"} for row in rows)
    assert set(_row(md, "dft", "—")[2:]) == {"—"}  # dft has no vlm_table.csv
    assert "missing for dft, empty: no token_probs.json" in md
    assert "0.00" not in "".join(line for line in md.splitlines() if line.startswith("| empty"))


def test_curves_use_latest_checkpoint_and_token_section(report):
    out, md = report
    assert _row(md, "dft", "checkpoint-4/trainer_state.json") == [
        "dft", "checkpoint-4/trainer_state.json", "4", "0.75", "1.75", "0.5"]
    assert _row(md, "sft", "trainer_state.json")[2:] == ["4", "1.25", "1.25", "0.45"]
    assert "'loss': — missing for empty" in md
    for name in ("curve_loss.png", "curve_nll.png", "curve_mean_target_prob.png", "token_probs.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC and f"]({name})" in md
    assert _row(md, "sft / base")[1:6] == ["20", "0.2125", "0.0523", "60.0%", "10.0%"]
    assert "' the'" in _row(md, "sft / base")[6]


def test_html_is_self_contained(report):
    out, _ = report
    page = (out / "report.html").read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:8] == PNG_MAGIC
    assert page.count("<tr class='reference'>") == 5
    assert "href=" not in page and "<link" not in page


def test_extra_columns_are_kept_and_reference_can_be_left_out(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "sft", run)
    table = run / "eval" / "code" / "code_table.csv"
    rows = list(csv.DictReader(table.open()))
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "HumanEval", "MBPP"])
        writer.writeheader()
        writer.writerow({"model": rows[0]["model"], "HumanEval": rows[0]["HumanEval"], "MBPP": "40.00"})
    out = tmp_path / "out"
    build_report([f"only={run}"], str(out), reference_dir=str(tmp_path / "no_reference_here"))
    md = (out / "report.md").read_text()
    cells = _row(md, "only", "tiny-sft")
    assert cells[2] == "12.50" and cells[-1] == "40.00" and cells[3] == "—"
    assert "reference (paper)" not in md


def test_bad_run_is_a_user_error(tmp_path, capsys):
    assert main(["report", "--run", f"x={tmp_path / 'nope'}", "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_reference_csvs_hold_only_numbers_design_md_gives():
    code = list(csv.DictReader((REFERENCE / "code.csv").open()))
    vlm = list(csv.DictReader((REFERENCE / "vlm.csv").open()))
    assert list(code[0]) == ["model", *CODE_COLUMNS, "source"] and list(vlm[0]) == ["model", *VLM_COLUMNS, "source"]
    given = {("Qwen2.5-Coder-7B base", "HumanEval"): "62.2", ("Qwen2.5-Coder-7B DFT", "HumanEval+"): "59.8",
             ("Qwen2.5-Coder-7B DFT", "MultiPL-E Avg"): "62.30", ("Qwen2.5-VL-3B base", "WeMath"): "4.10",
             ("Qwen2.5-VL-3B DFT", "MathVerse Overall"): "37.54", ("Qwen2.5-VL-3B SFT", "MathVision"): "21.02"}
    by_model = {row["model"]: row for row in code + vlm}
    for (model, column), value in given.items():
        assert by_model[model][column] == value
    assert all(row["source"] for row in code + vlm)
    assert all(row[c] == "" for row in code for c in CODE_COLUMNS if c.startswith("MultiPL-E ") and c != "MultiPL-E Avg")
    assert all(row[c] == "" for row in vlm for c in VLM_COLUMNS[:3])


def test_malformed_token_probs_names_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "analysis").mkdir(parents=True)
    (run / "analysis" / "token_probs.json").write_text('{"models": {"m": {"num_tokens": 3}}}')
    assert main(["report", "--run", f"r={run}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "token_probs.json" in err and "'m'" in err and "bin_edges" in err


def test_column_order_is_the_cross_team_convention():
    assert CODE_COLUMNS == ("HumanEval", "HumanEval+", "MultiPL-E Python", "MultiPL-E C++", "MultiPL-E Java",
                            "MultiPL-E PHP", "MultiPL-E TS", "MultiPL-E C#", "MultiPL-E Bash", "MultiPL-E JS",
                            "MultiPL-E Avg")
    assert VLM_COLUMNS == ("MathVerse Vision Only", "MathVerse Vision Intensive", "MathVerse Vision Dominant",
                           "MathVerse Overall", "MathVision", "WeMath")


def test_per_dataset_scores_are_listed(tmp_path):
    """Held-out / single-benchmark score files below a run dir appear with their headline metric."""
    import json

    from dft_mm.analysis.report import build_report

    run = tmp_path / "run"
    (run / "eval_code").mkdir(parents=True)
    (run / "eval_vlm").mkdir()
    (run / "eval_code" / "multipl-e-python_score.json").write_text(json.dumps({"benchmark": "multipl-e-python", "pass@1": 0.7, "pass@1_percent": 70.0}))
    (run / "eval_vlm" / "colours_score.json").write_text(json.dumps({"Overall": 71.875, "colour": 71.875}))
    (run / "eval_vlm" / "notes_score.json").write_text(json.dumps({"comment": "no metric"}))
    report = build_report([f"dft={run}"], str(tmp_path / "out")).read_text()
    assert "| dft | multipl-e-python | pass@1 (%) | 70.00 |" in report
    assert "| dft | colours | Overall (%) | 71.88 |" in report
    assert "notes" not in report
