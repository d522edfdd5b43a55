"""Generation end to end with the tiny offline Qwen2 (scores near zero are expected): samples in
EvalPlus/MultiPL-E format, stop-token truncation, chat mode, resume after a kill, and the full
`eval code run` pipeline writing the paper table."""

from __future__ import annotations

import csv
import json

import pytest

from dft_mm.cli import main as cli_main
from dft_mm.errors import UserError
from dft_mm.evaluation.code.data import DEFAULT_STOP_TOKENS
from dft_mm.evaluation.code.generation import (
    RAW_SAMPLES,
    GenerationSettings,
    _sample_rows,
    build_requests,
    evalplus_stop,
    generate,
)
from dft_mm.evaluation.code.pipeline import run


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.e2e
def test_generate_humaneval_resumes_after_a_kill(tiny_text_model, tmp_path):
    path = generate(tiny_text_model, "humaneval", tmp_path, GenerationSettings(limit=3, max_new_tokens=12, batch_size=2))
    rows = _rows(path)
    assert [(r["task_id"], r["index"]) for r in sorted(rows, key=lambda r: r["task_id"])] == \
        [("HumanEval/0", 0), ("HumanEval/1", 0), ("HumanEval/2", 0)]
    # EvalPlus's codegen: the sanitised prompt + output as `solution`, the raw text beside it
    raw = {r["task_id"]: r["solution"] for r in _rows(tmp_path / RAW_SAMPLES)}
    assert sorted(raw) == sorted(r["task_id"] for r in rows)
    assert all(not any(s in r["solution"] for s in evalplus_stop(False)[:3]) for r in rows)

    before = path.read_text()
    generate(tiny_text_model, "humaneval", tmp_path, GenerationSettings(limit=3, max_new_tokens=12))
    assert path.read_text() == before, "a finished run must not regenerate anything"

    lines = before.splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:10])  # killed while writing the third sample
    generate(tiny_text_model, "humaneval", tmp_path, GenerationSettings(limit=3, max_new_tokens=12))
    after = _rows(path)
    assert after[:2] == rows[:2] and len(after) == 3 and after[2]["task_id"] == rows[2]["task_id"]


@pytest.mark.e2e
def test_generate_multiple_and_chat_modes(tiny_text_model, multipl_e_dir, tmp_path):
    data = multipl_e_dir / "humaneval-cpp.jsonl"
    rows = _rows(generate(tiny_text_model, "multipl-e-cpp", tmp_path / "cpp", GenerationSettings(limit=2, max_new_tokens=16), data=data))
    assert all(r["name"] == r["task_id"] and "\n}" not in r["completion"] for r in rows)
    assert all((r["temperature"], r["top_p"], r["max_tokens"]) == (0.0, 1.0, 16) for r in rows)  # for .results.json

    chat = _rows(generate(tiny_text_model, "humaneval", tmp_path / "chat", GenerationSettings(chat=True, limit=2, max_new_tokens=16)))
    assert all("solution" in r and "completion" not in r and "\n```\n" not in r["solution"] for r in chat)

    py = _rows(generate(tiny_text_model, "multipl-e-python", tmp_path / "py", GenerationSettings(limit=2, max_new_tokens=16),
                        data=multipl_e_dir / "humaneval-python.jsonl"))
    assert [r["task_id"] for r in sorted(py, key=lambda r: r["task_id"])] == ["Python/0", "Python/1"]
    assert all(not any(s in r["completion"] for s in DEFAULT_STOP_TOKENS["python"]) for r in py)

    with pytest.raises(UserError, match="temperature"):
        generate(tiny_text_model, "humaneval", tmp_path / "n", GenerationSettings(n_samples=4, limit=1))


@pytest.mark.e2e
def test_run_pipeline_writes_table(tiny_text_model, multipl_e_dir, tmp_path, monkeypatch):
    row = run(tiny_text_model, tmp_path, "humaneval,multipl-e-js", GenerationSettings(limit=2, max_new_tokens=8),
              multipl_e_dir=multipl_e_dir, workers=2, model_name="tiny")
    assert row["model"] == "tiny" and row["HumanEval"] == "0.00" and row["MultiPL-E JS"] == "0.00"
    with open(tmp_path / "code_table.csv") as handle:
        parsed = list(csv.DictReader(handle))
    assert parsed == [row] and row["HumanEval+"] == "" and row["MultiPL-E Avg"] == ""
    for bench in ("humaneval", "multipl-e-js"):
        score = json.loads((tmp_path / bench / f"{bench}_score.json").read_text())
        assert score["num_samples"] == 2 and score["pass@1"] == 0.0

    # the CLI runs the same pipeline; everything is resumed, so it only re-scores
    assert cli_main(["eval", "code", "run", "--model", str(tiny_text_model), "--out", str(tmp_path),
                     "--benchmarks", "humaneval,multipl-e-js", "--multipl-e-dir", str(multipl_e_dir),
                     "--limit", "2", "--max-new-tokens", "8", "--model-name", "tiny"]) == 0
    assert len(_rows(tmp_path / "humaneval" / "samples.jsonl")) == 2
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli_main(["eval", "code", "run", "--model", str(tiny_text_model), "--out", str(tmp_path / "x"),
                     "--benchmarks", "humaneval+"]) == 2  # no HumanEval+ data here: a clear error, exit 2


@pytest.mark.e2e
def test_greedy_outputs_do_not_depend_on_batch_composition(tiny_text_model, multipl_e_dir, tmp_path):
    data = multipl_e_dir / "humaneval-python.jsonl"
    alone = _rows(generate(tiny_text_model, "multipl-e-python", tmp_path / "a",
                           GenerationSettings(limit=2, max_new_tokens=12, batch_size=1), data=data))
    mixed = _rows(generate(tiny_text_model, "multipl-e-python", tmp_path / "b",
                           GenerationSettings(limit=6, max_new_tokens=12, batch_size=6), data=data))  # the same two prompts, batched with four others if batching were used
    by_task = {r["task_id"]: r["completion"] for r in mixed}
    assert {r["task_id"]: r["completion"] for r in alone} == {r["task_id"]: by_task[r["task_id"]] for r in alone}


def test_evalplus_sample_rows_sanitise_and_expand_tabs():
    problem = {"task_id": "HumanEval/53", "prompt": "def add(x: int, y: int):\n    \"\"\"Add.\"\"\"\n",
               "entry_point": "add"}
    request = build_requests("humaneval", [problem], chat=False)[0]
    assert request["text"] == problem["prompt"].strip() + "\n" and "\ndef " in request["stop"]
    row, raw = _sample_rows("humaneval", request, 0, "\treturn x + y\nprint(add(1, 2))\n", False, {})
    assert raw["solution"] == request["text"] + "    return x + y\nprint(add(1, 2))\n"[:len("    return x + y")]
    assert row["solution"] == 'def add(x: int, y: int):\n    """Add."""\n    return x + y'  # EvalPlus's sanitize
    chat_request = build_requests("humaneval+", [problem], chat=True)[0]
    assert chat_request["stop"][-1] == "\n```\n" and chat_request["evalplus_chat"]
    row, raw = _sample_rows("humaneval", chat_request, 0, "import math\ndef add(x, y):\n\treturn x + y\n\n"
                            "assert add(1, 2) == 3\n```\n", True, {})
    assert row["solution"] == "import math\ndef add(x, y):\n    return x + y"
