"""`dft-mm report`: paper tables, seeds pooled with their spread, the generated summary, the
judged / judge-free distinction, relative paths, and the HTML page in a real browser."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from browser import chromium_page, image_widths
from conftest import shared_data_dir
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


def test_code_table_in_paper_order_with_deltas_and_every_reference_row(report):
    _, md = report
    header = next(line for line in md.splitlines() if line.startswith("| run | model | HumanEval"))
    assert header == "| run | model | " + " | ".join(CODE_COLUMNS) + " |"
    assert _row(md, "sft", "tiny-sft")[2:5] == ["12.50", "10.00", "25.00"]
    assert _row(md, "dft", "tiny-dft")[2:5] == ["15.00 (+2.50)", "12.50 (+2.50)", "30.00 (+5.00)"]
    assert _row(md, "dft", "tiny-dft")[5] == "—"  # C++ not run: missing, not zero
    for model in ("Qwen2.5-3B", "Qwen2.5-Coder-3B", "Qwen2.5-Coder-7B"):
        for stage in ("base", "SFT", "DFT"):
            assert "—" not in _row(md, "reference (paper)", f"{model} {stage}")  # full rows
    assert _row(md, "reference (paper)", "Qwen2.5-Coder-7B DFT")[2:] == [
        "67.7", "59.8", "67.68", "67.70", "54.43", "60.87", "70.44", "65.19", "48.73", "63.35", "62.30"]
    assert "published numbers" in md and "Runs without this table: empty." in md


def test_judge_free_vlm_rows_are_a_labelled_proxy_without_the_paper_beside_them(report):
    _, md = report
    # the fixture's vlm_table.csv has no score file saying "vlmevalkit": a judge-free proxy
    assert "| run | model | " + " | ".join(VLM_COLUMNS) + " |" not in md
    assert "| run | model | " + " | ".join(f"{c} (proxy)" for c in VLM_COLUMNS) + " |" in md
    assert _row(md, "sft", "tiny-vl-sft")[2:] == ["20.00", "22.50", "25.00", "22.50", "10.00", "—"]
    assert "Qwen2.5-VL-3B" not in md and "not the paper's metric" in md


def test_vlmevalkit_scores_go_in_the_paper_columns_with_the_reference(tmp_path):
    from dft_mm.evaluation.vlm.table import table_row, write_vlm_table

    runs = {}
    for name, scorer in (("kit", "vlmevalkit"), ("proxy", None)):
        run = tmp_path / name
        label = {"scorer": scorer, "judge": "gpt-4o-mini", "system_prompt": None} if scorer else {"scorer": "judge-free"}
        results = {"MathVerse_MINI": {"Overall": 30.0, **label}, "WeMath": {"score_strict": 12.5, **label}}
        write_vlm_table(run / "eval", [table_row(f"tiny-{name}", results)])  # vlm_table.* or vlm_proxy_table.*
        for dataset, metrics in results.items():
            payload = metrics if scorer else {key: value for key, value in metrics.items() if key != "scorer"}
            (run / "eval" / dataset).mkdir(parents=True)
            (run / "eval" / dataset / f"{dataset}_score.json").write_text(json.dumps(payload))
        runs[name] = run
    out = tmp_path / "out"
    md = build_report([f"kit={runs['kit']}", f"proxy={runs['proxy']}"], str(out), reference_dir=str(REFERENCE)).read_text()
    official = md.split("## Multimodal math benchmarks (VLMEvalKit, %)")[1].split("## ")[0]
    proxy = md.split("## Multimodal math, judge-free proxy")[1].split("## ")[0]
    assert "tiny-kit" in official and "tiny-proxy" not in official
    assert _row(official, "reference (paper)", "Qwen2.5-VL-3B DFT")[2:] == ["32.49", "35.91", "33.50", "37.54", "22.30", "23.71"]
    assert "tiny-proxy" in proxy and "tiny-kit" not in proxy and "reference (paper)" not in proxy
    assert _row(md, "kit", "MathVerse_MINI")[4] == "VLMEvalKit (judge: gpt-4o-mini)"
    assert _row(md, "proxy", "MathVerse_MINI")[4] == "judge-free proxy"


def test_no_paper_tables_when_no_paper_benchmark_was_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "sft", run)
    shutil.rmtree(run / "eval")
    md = build_report([f"only={run}"], str(tmp_path / "out"), reference_dir=str(REFERENCE)).read_text()
    assert "Code benchmarks" not in md and "Multimodal" not in md and "reference (paper)" not in md


def test_missing_pieces_are_shown_as_missing_not_zero(report):
    _, md = report
    assert set(_row(md, "empty", "—")[1:]) == {"—"}  # the curves table
    assert "No trainer_state.json (no curves) for: empty." in md
    assert "No token analysis for dft, empty." in md
    assert "0.00" not in "".join(line for line in md.splitlines() if line.startswith("| empty"))


def test_curves_use_latest_checkpoint_and_token_section(report):
    out, md = report
    assert _row(md, "dft", "checkpoint-4/trainer_state.json") == [
        "dft", "checkpoint-4/trainer_state.json", "4", "0.75", "1.75", "0.5"]
    assert _row(md, "sft", "trainer_state.json")[2:] == ["4", "1.25", "1.25", "0.45"]
    for name in ("curve_loss.png", "curve_nll.png", "curve_mean_target_prob.png", "token_probs.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC and f"]({name})" in md
    assert _row(md, "sft / base")[1:6] == ["20", "0.2125", "0.0523", "60.0%", "10.0%"]
    assert "' the'" in _row(md, "sft / base")[6]
    assert _row(md, "sft", "20")[1:6] == ["20", "0.5525", "0.5612", "10.0%", "20.0%"]  # the model named like the run is that run


def test_html_is_self_contained(report):
    out, _ = report
    page = (out / "report.html").read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:8] == PNG_MAGIC
    assert page.count("<tr class='reference'>") == 9  # every row of the paper's code table
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


def test_reference_csvs_hold_every_published_cell():
    root = shared_data_dir()
    if root is None or not (root / "paper").is_dir():
        pytest.skip("the paper's tables are not here: expected ../shared/data/paper beside the checkout")
    for name, columns in (("code", CODE_COLUMNS), ("vlm", VLM_COLUMNS)):
        ours = list(csv.DictReader((REFERENCE / f"{name}.csv").open()))
        paper = list(csv.DictReader((root / "paper" / f"{name}.csv").open()))
        assert list(ours[0]) == ["model", *columns, "source"]
        assert [row["model"] for row in ours] == [row["model"] for row in paper]
        for mine, theirs in zip(ours, paper):
            assert all(float(mine[c]) == float(theirs[c]) for c in columns), mine["model"]
            assert "arXiv:2508.05629" in mine["source"]


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


# ---- seeds ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeded_runs(tmp_path_factory):
    """Run dirs ``code/{base,sft@0..2,dft@0..2}``, scored by the real MultiPL-E scorer (sandboxed)."""
    from dft_mm.evaluation.code.scoring import score
    from dft_mm.demo.synthetic import text_problems, write_multipl_e_jsonl

    root = tmp_path_factory.mktemp("seeded")
    problems = text_problems(4, seed=0)
    data = write_multipl_e_jsonl(problems, root / "heldout.jsonl")
    passing = {"code/base": 1, "code/sft@0": 2, "code/sft@1": 2, "code/sft@2": 3, "code/dft@0": 4, "code/dft@1": 4,
               "code/dft@2": 4}
    runs = {}
    for name, count in passing.items():
        run = root / name.replace("/", "-").replace("@", "-s")
        shutil.copytree(FIXTURES / "sft", run)  # a trainer_state.json for the curves
        shutil.rmtree(run / "eval")
        samples = run / "samples.jsonl"
        samples.write_text("".join(json.dumps({"task_id": p["name"], "completion": p["completion"] if i < count
                                               else "    return None\n"}) + "\n" for i, p in enumerate(problems)))
        score("multipl-e-python", samples, run / "eval" / "heldout", data=data)
        runs[name] = run
    return runs


def test_seeds_are_pooled_with_their_spread_and_summarised(seeded_runs, tmp_path):
    out = tmp_path / "report"
    md = build_report([f"{name}={path}" for name, path in seeded_runs.items()], str(out),
                      task_notes={"code": "new knowledge"}).read_text()
    dft = _row(md, "code", "multipl-e-python (eval/heldout)", "pass@1 (%)", "execution", "dft")
    sft = _row(md, "code", "multipl-e-python (eval/heldout)", "pass@1 (%)", "execution", "sft")
    assert sft[5:] == ["3", "58.33", "14.43", "50.00–75.00", "+33.33", "0:50.00 1:50.00 2:75.00"]
    assert dft[5:] == ["3", "100.00", "0.00", "100.00–100.00", "+75.00", "0:100.00 1:100.00 2:100.00"]
    summary = md.split("**What this shows.** ")[1].split("\n")[0]
    assert summary == ("Over 1 task: dft wins 1 (code). DFT against SFT alone, by the same rule: DFT wins 1, SFT wins 0, "
                       "no clear difference in 0.")
    assert ("| new knowledge | code | multipl-e-python (eval/heldout) pass@1 (%) | dft | +41.67 over sft | "
            "dft 100.00, sft 58.33, base 25.00 |") in md
    assert (out / "scores.png").read_bytes()[:8] == PNG_MAGIC
    assert "../" not in md.split("## Run directories")[0]  # no paths in the body
    assert "| code/dft@2 | code | dft | 2 |" in md


def test_overlapping_seeds_are_no_clear_difference(seeded_runs, tmp_path):
    names = ["code/sft@0", "code/sft@2", "code/dft@0"]
    picked = dict(seeded_runs)
    picked["code/dft@0"] = seeded_runs["code/sft@1"]  # 50: inside SFT's 50-75 range
    md = build_report([f"{n}={picked[n]}" for n in names], str(tmp_path / "r")).read_text()
    assert "| — | code | multipl-e-python (eval/heldout) pass@1 (%) | no clear winner (sft ≈ dft) | +12.50 over dft |" in md
    assert "SFT wins 0, no clear difference in 1." in md


def test_paths_are_relative_to_the_report(tmp_path):
    run = tmp_path / "demo" / "runs" / "sft"
    shutil.copytree(FIXTURES / "sft", run)
    md = build_report([f"sft={run}"], str(tmp_path / "demo" / "report"), reference_dir=str(REFERENCE)).read_text()
    assert "| sft | runs | sft | — | ../runs/sft |" in md
    assert str(tmp_path) not in md


def test_report_html_opens_in_chromium(seeded_runs, tmp_path):
    out = tmp_path / "report"
    build_report([f"{name}={path}" for name, path in seeded_runs.items()], str(out))
    with chromium_page(tmp_path / "browser") as session:
        session.page.goto((out / "report.html").as_uri())
        widths = image_widths(session)
        shot = session.screenshot("report.png")
    assert len(widths) >= 4 and all(width > 0 for width in widths), widths
    assert session.errors == []
    assert shot.read_bytes()[:8] == PNG_MAGIC
