"""MultiPL-E scoring on the real prompts/tests (../shared/data/multipl-e) in all eight languages:
completions written for this project must pass, wrong answers and syntax errors must fail with the
status MultiPL-E's own evaluator gives them; results land in MultiPL-E's per-problem format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.code.data import load_multiple
from dft_mm.evaluation.code.languages import check_toolchain
from dft_mm.evaluation.code.scoring import score

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "code" / "multiple_completions.json").read_text())
KINDS = ("ok", "wrong", "syntax")


def _number(task_id: str) -> str:
    """``HumanEval_53_add`` or ``Python/53`` -> ``"53"``."""
    return task_id.split("/")[1] if "/" in task_id else task_id.split("_")[1]


@pytest.mark.e2e
@pytest.mark.parametrize("lang", sorted(FIXTURE["completions"]))
def test_language_statuses_match_multipl_e(lang, multipl_e_dir, tmp_path):
    try:
        check_toolchain(lang)
    except UserError as err:
        pytest.skip(str(err))
    data = multipl_e_dir / f"humaneval-{lang}.jsonl"
    by_number = {_number(p["task_id"]): p["task_id"] for p in load_multiple(lang, data)}
    samples = tmp_path / "samples.jsonl"
    with open(samples, "w") as handle:
        for number, completions in FIXTURE["completions"][lang].items():
            for kind in KINDS:
                handle.write(json.dumps({"name": by_number[number], "completion": completions[kind]}) + "\n")

    summary = score(f"multipl-e-{lang}", samples, tmp_path / "out", workers=2, data=data)

    wrong_status, syntax_status = FIXTURE["expected_status"][lang]
    for number in FIXTURE["completions"][lang]:
        task_id = by_number[number]
        record = json.loads((tmp_path / "out" / "results" / f"{task_id.replace('/', '_')}.results.json").read_text())
        statuses = [r["status"] for r in record["results"]]
        assert statuses == ["OK", wrong_status, syntax_status], (task_id, [r["stderr"][:300] for r in record["results"]])
        assert record["language"] == lang and record["results"][0]["program"].endswith(record["tests"])
        assert record["results"][0]["exit_code"] == 0
    assert summary["pass@1"] == pytest.approx(1 / 3)
    assert summary["status"]["OK"] == len(FIXTURE["completions"][lang])
