"""UltraFeedback -> best-response converter on fixture rows in the upstream schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dft_mm.cli import main
from dft_mm.data.ultrafeedback import DATASET_INFO_ENTRY, completion_score, convert_ultrafeedback
from dft_mm.errors import UserError

FIXTURE = Path(__file__).parent / "fixtures" / "data" / "ultrafeedback_sample.jsonl"


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "ultrafeedback_best.jsonl").read_text().splitlines()]


def _by_instruction(out: Path) -> dict[str, dict]:
    return {record["instruction"]: record for record in _records(out)}


def _parseable_rows() -> list[dict]:
    rows = []
    for line in FIXTURE.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def test_completion_score_skips_na_and_reads_both_annotation_shapes():
    def aspect(rating, as_list):
        return [{"Rating": rating, "Rationale": "x"}] if as_list else {"Rating": rating, "Rationale": "x"}

    for as_list in (False, True):
        annotations = {"instruction_following": aspect("5", as_list), "honesty": aspect("N/A", as_list),
                       "truthfulness": aspect("3", as_list), "helpfulness": aspect("4", as_list)}
        assert completion_score({"annotations": annotations}) == pytest.approx(4.0)
    all_na = {name: {"Rating": "N/A"} for name in ("instruction_following", "honesty", "truthfulness", "helpfulness")}
    assert completion_score({"annotations": all_na}) is None
    assert completion_score({"annotations": {"honesty": [{"Rating": "2"}, {"Rating": "5"}]}}) is None  # ambiguous list


def test_fixture_picks_best_completion_and_counts_drops(tmp_path):
    stats = convert_ultrafeedback(str(FIXTURE), tmp_path, num_prompts=0)
    chosen = _by_instruction(tmp_path)
    assert chosen["Write a Python function that adds two numbers."]["output"].startswith("def add(a: int")
    # N/A is skipped, not counted as 0: mean(5,5,5)=5 beats mean(5,5,4,5)=4.75
    assert chosen["Reverse the string 'abc'."] == {
        "instruction": "Reverse the string 'abc'.", "output": "'cba'", "source": "flan_v2_niv2", "score": 5.0,
        "model": "wizardlm-7b"}
    assert chosen["Print hello world in C++."]["score"] == pytest.approx(4.25)  # one-element-list annotations
    assert chosen["Explain what a list comprehension is."]["model"] == "gpt-4"  # tie -> higher overall_score
    assert chosen["Name a sorting algorithm."]["output"] == "Merge sort."  # full tie -> earlier completion
    assert chosen["How many legs does a fish have?"]["output"] == "Fish have no legs."  # best one is blank
    assert stats["skipped"] == {
        "empty_instruction": 1, "empty_responses": 1, "malformed_row: completions is not a list": 1,
        "malformed_row: invalid JSON": 1, "no_completions": 1, "no_valid_rating": 1}
    assert stats["read"] == 20 and stats["valid"] == stats["kept"] == 14
    assert sum(stats["score_histogram"].values()) == 14
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info == {"ultrafeedback_best": DATASET_INFO_ENTRY}


def test_sampling_is_seeded_over_valid_rows_and_keeps_source_order(tmp_path):
    convert_ultrafeedback(str(FIXTURE), tmp_path / "all", num_prompts=0)
    all_instructions = [r["instruction"] for r in _records(tmp_path / "all")]
    first = convert_ultrafeedback(str(FIXTURE), tmp_path / "a", num_prompts=5, seed=7)
    convert_ultrafeedback(str(FIXTURE), tmp_path / "b", num_prompts=5, seed=7)
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    picked = [r["instruction"] for r in _records(tmp_path / "a")]
    assert len(picked) == 5 and first["not_sampled"] == 9
    assert picked == [i for i in all_instructions if i in picked]  # a subsequence: source order kept
    samples = set()
    for seed in range(4):
        convert_ultrafeedback(str(FIXTURE), tmp_path / f"s{seed}", num_prompts=5, seed=seed)
        samples.add(tuple(r["instruction"] for r in _records(tmp_path / f"s{seed}")))
    assert len(samples) > 1  # the seed matters


def test_json_array_and_parquet_inputs_match_jsonl(tmp_path):
    pd = pytest.importorskip("pandas")
    rows = [r for r in _parseable_rows() if isinstance(r.get("completions"), list)
            and not any(isinstance(v, list) for c in r["completions"] for v in c["annotations"].values())]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    (tmp_path / "shards").mkdir()  # a directory of shards, as an HF snapshot download has
    pd.DataFrame(rows[:5]).to_parquet(tmp_path / "shards" / "train-00000.parquet")
    pd.DataFrame(rows[5:]).to_parquet(tmp_path / "shards" / "train-00001.parquet")
    outputs = []
    for name in ("rows.jsonl", "rows.json", "rows.parquet", "shards"):
        convert_ultrafeedback(str(tmp_path / name), tmp_path / ("out_" + name.replace(".", "_")), num_prompts=0)
        outputs.append(_records(tmp_path / ("out_" + name.replace(".", "_"))))
    assert outputs[0] == outputs[1] == outputs[2] == outputs[3]
    assert len(outputs[0]) == len(rows) - 4  # no completions, all N/A, only empty responses, blank instruction


def test_cli_reports_bad_inputs_without_traceback(tmp_path, capsys):
    assert main(["data", "ultrafeedback", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert main(["data", "ultrafeedback", "--input", "data/missing.jsonl", "--out", str(tmp_path)]) == 2
    assert "data/missing.jsonl: no such file" in capsys.readouterr().err  # not mistaken for an HF id
    # an HF id goes through datasets.load_dataset; offline it fails with a message naming the id
    assert main(["data", "ultrafeedback", "--input", "openbmb/UltraFeedback", "--out", str(tmp_path)]) == 2
    assert "openbmb/UltraFeedback" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"instruction": "x", "completions": []}\n')
    with pytest.raises(UserError, match="no usable UltraFeedback rows"):
        convert_ultrafeedback(str(empty), tmp_path / "out")


def test_cli_writes_outputs_and_prints_stats(tmp_path, capsys):
    assert main(["data", "ultrafeedback", "--input", str(FIXTURE), "--out", str(tmp_path), "--num-prompts", "3",
                 "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "kept 3" in printed and "no_valid_rating" in printed
    assert len(_records(tmp_path)) == 3
