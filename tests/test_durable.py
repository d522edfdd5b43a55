"""dft_mm.durable: atomic whole-file writes, the append log's torn last line, and a HumanEval
scoring run killed (SIGKILL) at random points whose rerun ends exactly where an uninterrupted run does."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dft_mm import durable
from dft_mm.durable import append, complete_records, open_for_append

REPO = Path(__file__).resolve().parents[1]


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- whole files ----------------------------------------------------------------------------------------------

def test_json_formats_are_the_callers_own(tmp_path):
    obj = {"name": "naïve", "values": [1, 2.5, None], "nested": {"ok": True}}
    cases = [  # (keywords, the bytes the callers wrote before they came here)
        ({}, json.dumps(obj, indent=2, ensure_ascii=False) + "\n"),  # datasets, VLM scores, token_probs.json
        ({"ensure_ascii": True, "final_newline": False}, json.dumps(obj, indent=2)),  # code scores and results
        ({"indent": None, "ensure_ascii": True, "final_newline": False}, json.dumps(obj)),  # eval_results.json
    ]
    for keywords, expected in cases:
        folder = tmp_path / str(len(keywords))
        durable.write_json(folder / "x.json", obj, **keywords)
        assert (folder / "x.json").read_bytes() == expected.encode("utf-8")
        assert _listing(folder) == ["x.json"]


def test_jsonl_text_and_bytes(tmp_path):
    rows = [{"a": "é"}, {"b": [1, 2]}]
    assert durable.write_jsonl(tmp_path / "deep" / "rows.jsonl", iter(rows)) == 2  # parents are created
    assert (tmp_path / "deep" / "rows.jsonl").read_text(encoding="utf-8") == '{"a": "é"}\n{"b": [1, 2]}\n'
    assert durable.write_jsonl(tmp_path / "ascii.jsonl", rows, ensure_ascii=True) == 2
    assert (tmp_path / "ascii.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in rows)
    durable.write_text(tmp_path / "table.csv", "a,b\r\n1,2\r\n", newline="")  # csv's own line ends, untranslated
    assert (tmp_path / "table.csv").read_bytes() == b"a,b\r\n1,2\r\n"
    durable.write_bytes(tmp_path / "blob.bin", b"\x00\xff")
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\xff"
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "blob.bin").stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would have made it
    with pytest.raises(ValueError, match="mode"):
        with durable.open_atomic(tmp_path / "x", "a"):
            pass


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "scores.json"
    durable.write_json(target, {"old": 1})
    old = target.read_bytes()

    with pytest.raises(TypeError):
        durable.write_json(target, {"new": object()})  # not serialisable

    def rows():
        yield {"new": 1}
        yield {"new": 2}
        raise RuntimeError("generator died mid-file")

    with pytest.raises(RuntimeError):
        durable.write_jsonl(target, rows())
    with pytest.raises(TypeError):
        durable.write_jsonl(target, [{"ok": 1}, {"bad": {1, 2}}])  # the second record cannot be serialised
    with pytest.raises(KeyboardInterrupt):
        with durable.open_atomic(target) as handle:
            handle.write('{"half": ')
            raise KeyboardInterrupt
    assert target.read_bytes() == old
    assert _listing(tmp_path) == ["scores.json"]

    durable.write_json(target, {"new": 2})  # and a write that succeeds replaces it whole
    assert json.loads(target.read_text()) == {"new": 2} and _listing(tmp_path) == ["scores.json"]


# ---- append logs ----------------------------------------------------------------------------------------------

def test_torn_last_line_is_skipped_then_cut_before_appending(tmp_path):
    log = tmp_path / "executions.jsonl"
    assert complete_records(log) == []
    with open_for_append(log) as handle:  # created when missing
        append(handle, {"key": "a", "result": 1})
        append(handle, {"key": "b", "result": "é"})
    whole = log.read_bytes()
    assert whole == b'{"key": "a", "result": 1}\n{"key": "b", "result": "\\u00e9"}\n'

    log.write_bytes(whole + b'{"key": "c", "res')  # a run killed while writing its third record
    assert complete_records(log) == [{"key": "a", "result": 1}, {"key": "b", "result": "é"}]
    with open_for_append(log) as handle:
        assert log.read_bytes() == whole  # the torn tail is gone, finished records untouched
        append(handle, {"key": "c", "result": 3})
    assert [r["key"] for r in complete_records(log)] == ["a", "b", "c"]
    assert log.read_bytes().count(b"\n") == 3

    log.write_bytes(whole + b'{"key": "d", "result": 4}')  # killed after the record, before its newline
    assert [r["key"] for r in complete_records(log)] == ["a", "b", "d"]
    open_for_append(log).close()
    assert log.read_bytes() == whole + b'{"key": "d", "result": 4}\n'  # kept, and terminated

    log.write_bytes(whole + '{"key": "é'.encode("utf-8")[:-1])  # cut inside a multi-byte character
    open_for_append(log).close()
    assert log.read_bytes() == whole

    log.write_bytes(b'{"key": "x"')  # a torn first line: nothing survives
    assert complete_records(log) == []
    open_for_append(log).close()
    assert log.read_bytes() == b""


# ---- a real scoring run, killed and rerun ---------------------------------------------------------------------

# `dft-mm eval code score`, through the code commands' own parser and handler (the other command
# groups are not needed to score, and their imports are no part of this test)
SCORE = """
import argparse, sys
from dft_mm.evaluation.code import commands
parser = argparse.ArgumentParser(prog="dft-mm eval code")
commands.register(parser)
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""
KILLS = 12
SEED = 20250607


def _score_argv(samples: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", SCORE, "score", "--benchmark", "humaneval", "--samples", str(samples),
            "--out", str(out), "--workers", "2"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _outcome(out: Path) -> tuple[dict, dict, dict]:
    """Every verdict and score of a finished run, timings (the date, the seconds) aside."""
    evals = json.loads((out / "eval_results.json").read_text())
    summary = json.loads((out / "humaneval_score.json").read_text())
    del evals["date"], summary["seconds"]
    executions = {r["key"]: r["result"] for r in complete_records(out / "executions.jsonl")}
    return evals, summary, executions


def _logged(out: Path) -> int:
    path = out / "executions.jsonl"
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.e2e
def test_scoring_killed_at_random_points_reruns_to_the_uninterrupted_result(tmp_path):
    from dft_mm.evaluation.code.data import load_humaneval
    from dft_mm.evaluation.code.sandbox import check_bwrap
    from dft_mm.errors import UserError

    try:
        check_bwrap()
    except UserError as err:
        pytest.skip(f"no sandbox here: {err}")
    rows = []  # every canonical solution (pass) and a wrong one per task (fail): 328 programs, 41 batches
    for i, problem in enumerate(load_humaneval()):
        rows.append({"task_id": problem["task_id"], "completion": problem["canonical_solution"]})
        rows.append({"task_id": problem["task_id"], "completion": "    return None\n" if i % 2 else "    raise ValueError\n"})
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))

    reference = tmp_path / "reference"
    subprocess.run(_score_argv(samples, reference), env=_env(), check=True, capture_output=True, timeout=300)

    # Rounds: a round kills runs on one output folder until a run finishes, then its outcome must equal the
    # uninterrupted one; a new round starts from an empty folder while fewer than KILLS kills were made
    # (on a fast machine one round can finish its 328 programs within fewer kills).
    rng = random.Random(SEED)
    kills, mid_work, finished, rounds, at, started = 0, 0, 0, [], [], time.monotonic()
    while kills < KILLS:
        assert len(rounds) < 4, f"{len(rounds)} rounds gave only {kills} kills: {at}"
        out = tmp_path / f"killed{len(rounds)}"
        for _ in range(4 * KILLS):
            before = _logged(out)
            proc = subprocess.Popen(_score_argv(samples, out), env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            launched = time.monotonic()
            if rng.random() < 0.3:  # any point: start-up, self-test, executions, writing the results
                deadline = launched + rng.uniform(0.0, 2.0)
            else:  # once this run has finished new work, a little later: mid-execution
                while proc.poll() is None and _logged(out) <= before and time.monotonic() < launched + 60:
                    time.sleep(0.01)
                deadline = time.monotonic() + rng.uniform(0.0, 0.3)
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if proc.poll() is not None:  # finished before its kill: this round is over
                assert proc.returncode == 0
                finished += 1
                break
            incomplete = not (out / "humaneval_score.json").exists()
            proc.kill()
            proc.wait(timeout=60)
            at.append(_logged(out))
            kills += 1
            mid_work += incomplete
            for name in ("eval_results.json", "humaneval_score.json"):  # whole files: complete, or not there
                if (out / name).exists():
                    json.loads((out / name).read_text())
        subprocess.run(_score_argv(samples, out), env=_env(), check=True, capture_output=True, timeout=300)
        rounds.append(out)
    seconds = time.monotonic() - started
    print(f"\nkill test: {kills} kills in {len(rounds)} round(s) ({mid_work} before the score existed; executions "
          f"logged at each: {at}), {finished} runs finished before their kill, {seconds:.1f} s of killed runs + reruns")

    assert mid_work >= 5, (kills, mid_work)
    for out in rounds:
        evals, summary, executions = _outcome(out)
        assert (evals, summary, executions) == _outcome(reference)
        assert summary["base_status"] == {"pass": 164, "fail": 164}
        assert _logged(out) == len(executions) == 328  # every program logged once: torn lines dropped, none redone twice
