"""Scorer mechanics: pass@k, stop-token truncation, input validation, resume after an
interrupted run, identical programs executed once, and the paper table."""

from __future__ import annotations

import csv
import json
import math

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.code import data as code_data
from dft_mm.evaluation.code.scoring import EXECUTIONS, estimate_pass_at_k, pass_at_k, score, truncate_at_stop
from dft_mm.evaluation.code.table import COLUMNS, table_row, write_table


def test_pass_at_k_is_the_unbiased_estimator():
    for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 0, 10), (5, 5, 2), (200, 17, 100)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert estimate_pass_at_k(n, c, k) == pytest.approx(exact)
    assert pass_at_k([(10, 3), (10, 0)]) == {"pass@1": pytest.approx(0.15), "pass@10": pytest.approx(0.5)}
    assert "pass@10" not in pass_at_k([(10, 3), (9, 0)])  # only k that every task has samples for


def test_truncate_at_earliest_stop_token():
    assert truncate_at_stop("  return 1;\n}\n\nint main() {", ["\n}"]) == "  return 1;"
    assert truncate_at_stop("a\n//x\nfunction f", ["\nfunction ", "\n//"]) == "a"
    assert truncate_at_stop("no stop here", ["\n}"]) == "no stop here"


def test_benchmark_names_and_local_data_formats(multipl_e_dir):
    assert code_data.expand_benchmarks("humaneval,multipl-e")[:3] == ["humaneval", "multipl-e-python", "multipl-e-cpp"]
    assert len(code_data.expand_benchmarks("multipl-e,multipl-e-js")) == 8
    with pytest.raises(UserError, match="unknown benchmark"):
        code_data.parse_benchmark("mbpp")
    cpp = code_data.load_multiple("cpp", multipl_e_dir / "humaneval-cpp.jsonl")
    assert len(cpp) == 161 and cpp[0]["task_id"] == cpp[0]["name"] and cpp[0]["stop_tokens"] == ["\n}"]
    python = code_data.load_multiple("python", multipl_e_dir / "humaneval-python.jsonl")  # task_id/test spelling
    assert python[0]["task_id"] == "Python/0" and "def check" in python[0]["tests"]
    assert code_data.stop_tokens_for(python[0], "python") == code_data.DEFAULT_STOP_TOKENS["python"]
    with pytest.raises(UserError, match="is cpp, but the benchmark is multipl-e-java"):
        code_data.load_multiple("java", multipl_e_dir / "humaneval-cpp.jsonl")


def test_bad_samples_are_rejected_with_file_and_line(multipl_e_dir, tmp_path):
    data = multipl_e_dir / "humaneval-js.jsonl"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"name": "HumanEval_23_strlen", "completion": "x"}) + "\n"
                   + json.dumps({"name": "HumanEval_9999_nope", "completion": "x"}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: line 2: task 'HumanEval_9999_nope'"):
        score("multipl-e-js", bad, tmp_path / "out", data=data)
    bad.write_text('{"name": "HumanEval_23_strlen", "completion": "x"}\n{not json\n')
    with pytest.raises(UserError, match="bad.jsonl:2: not valid JSON"):
        score("multipl-e-js", bad, tmp_path / "out", data=data)


@pytest.mark.e2e
def test_resume_after_interruption_loses_nothing_and_dedupes(multipl_e_dir, tmp_path):
    data = multipl_e_dir / "humaneval-js.jsonl"
    problems = {p["task_id"]: p for p in code_data.load_multiple("js", data)}
    tasks = ["HumanEval_23_strlen", "HumanEval_53_add", "HumanEval_13_greatest_common_divisor"]
    ok = {"HumanEval_23_strlen": "  return string.length;\n}\n", "HumanEval_53_add": "  return x + y;\n}\n",
          "HumanEval_13_greatest_common_divisor": "  while (b) { [a, b] = [b, a % b]; }\n  return a;\n}\n"}
    rows = [{"name": t, "completion": ok[t]} for t in tasks]
    rows += [{"name": t, "completion": "  return null;\n}\n"} for t in tasks]
    rows.append({"name": tasks[0], "completion": ok[tasks[0]] + "\nfunction unused() {}"})  # same program after truncation
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"

    first = score("multipl-e-js", samples, out, workers=2, data=data)
    log = (out / EXECUTIONS).read_text().splitlines()
    assert len(log) == 6, "7 samples, 6 distinct programs: each executed once"

    # simulate a run killed mid-way: two records lost, the last one cut in half
    (out / EXECUTIONS).write_text("\n".join(log[:3]) + "\n" + log[3][: len(log[3]) // 2])
    kept = {json.loads(line)["key"]: json.loads(line)["result"] for line in log[:3]}
    second = score("multipl-e-js", samples, out, workers=2, data=data)

    records = [json.loads(line) for line in (out / EXECUTIONS).read_text().splitlines() if line.endswith("}")]
    assert {r["key"] for r in records} == {json.loads(line)["key"] for line in log}
    for key, result in kept.items():  # finished work was reused, not re-executed
        assert [r["result"] for r in records if r["key"] == key] == [result]
    assert second["pass@1"] == first["pass@1"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    strlen = json.loads((out / "results" / "HumanEval_23_strlen.results.json").read_text())
    assert [r["status"] for r in strlen["results"]] == ["OK", "AssertionError", "OK"]
    assert strlen["prompt"] == problems["HumanEval_23_strlen"]["prompt"]
    assert json.loads((out / "multipl-e-js_score.json").read_text())["num_samples"] == 7


def test_table_has_paper_columns_and_percentages(tmp_path):
    scores = {"humaneval+": {"pass@1": 0.5, "base": {"pass@1": 0.625}},
              **{f"multipl-e-{lang}": {"pass@1": 0.1 * (i + 1)} for i, lang in enumerate(code_data.MULTIPLE_LANGUAGES)}}
    row = table_row("Qwen2.5-Coder-7B-DFT", scores)
    assert row["HumanEval"] == "62.50" and row["HumanEval+"] == "50.00"
    assert row["MultiPL-E Python"] == "10.00" and row["MultiPL-E JS"] == "80.00" and row["MultiPL-E Avg"] == "45.00"
    csv_path, md_path = write_table(tmp_path, [row, table_row("base", {"multipl-e-cpp": {"pass@1": 0.25}})])
    with open(csv_path) as handle:
        parsed = list(csv.DictReader(handle))
    assert list(parsed[0]) == COLUMNS == ["model", "HumanEval", "HumanEval+", "MultiPL-E Python", "MultiPL-E C++",
                                          "MultiPL-E Java", "MultiPL-E PHP", "MultiPL-E TS", "MultiPL-E C#",
                                          "MultiPL-E Bash", "MultiPL-E JS", "MultiPL-E Avg"]
    assert parsed[1]["MultiPL-E C++"] == "25.00" and parsed[1]["HumanEval"] == "" and parsed[1]["MultiPL-E Avg"] == ""
    assert md_path.read_text().splitlines()[0].startswith("| model | HumanEval | HumanEval+ |")
