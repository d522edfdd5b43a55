"""HumanEval+ input handling: EvalPlus's own loader behind ``--data`` / ``HUMANEVAL_OVERRIDE_PATH``,
with errors that name the file and the fix. (Scoring parity with the harnesses is in
``test_code_evalplus_parity.py``.)"""

from __future__ import annotations

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.code import derived_plus
from dft_mm.evaluation.code.data import load_humaneval, load_humaneval_plus


def test_override_path_and_data_flag_use_evalplus_loader(tmp_path, monkeypatch):
    rows, skipped = derived_plus.derive(load_humaneval()[:5], plus_size=7)
    assert skipped == [] and all(len(r["plus_input"]) == 7 for r in rows)
    path = derived_plus.write(rows, tmp_path / "HumanEvalPlus.jsonl")
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(path))  # read per call, not only at import
    problems, digest = load_humaneval_plus()
    assert [p["task_id"] for p in problems] == [r["task_id"] for r in rows] and len(digest) == 32
    assert load_humaneval_plus(path) == (problems, digest)
    # the seven candidate(...) calls of HumanEval/0's check(), in order
    assert problems[0]["base_input"][:2] == [[[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3], [[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05]]
    assert len(problems[0]["base_input"]) == 7


def test_bad_humaneval_plus_files_are_named(tmp_path):
    with pytest.raises(UserError, match="nope.jsonl does not exist"):
        load_humaneval_plus(tmp_path / "nope.jsonl")
    rows, _ = derived_plus.derive(load_humaneval()[:2])
    del rows[1]["contract"]
    path = derived_plus.write(rows, tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match=r"bad.jsonl: contract not found in HumanEval\+ #HumanEval/1"):
        load_humaneval_plus(path)
