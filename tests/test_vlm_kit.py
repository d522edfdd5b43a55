"""The real VLMEvalKit (ms-vlmeval, in its own environment) scoring prediction files these tests
build, with a deterministic judge server on 127.0.0.1 (tests/fixtures/vlm/judge_server.py).

Per dataset, on one prediction file written by the kit's own ``dump``:

- the kit's runner (``python -m vlmeval.run --mode eval``, through our adapter) scores it;
- ``score(..., judge=URL)`` (our judged route: the kit's own procedure) scores it;
- both equal the numbers worked out by hand from the judge's rules, and our parser reads the
  kit's files into exactly the kit's numbers.

The runner checks a benchmark TSV's MD5 against VLMEvalKit's and downloads the official file on
a mismatch; here (offline, tiny TSVs) ``sitecustomize.py`` sets those constants to the tiny
files' MD5s inside the kit's process. Nothing else of the kit is changed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.kit.environment import WORKER, find_kit_python
from dft_mm.evaluation.vlm.kit.files import EXACT_MATCHING, find_score_files, parse_score_file
from dft_mm.evaluation.vlm.kit.score import score_with_kit
from dft_mm.evaluation.vlm.datasets import spec_for
from dft_mm.evaluation.vlm.score import score
from dft_mm.evaluation.vlm.prompts import WETHINK_SYSTEM_PROMPT
from dft_mm.evaluation.vlm.kit.runner import collect_results, run_vlmevalkit, vlmevalkit_arguments, vlmevalkit_config

JUDGE_SERVER = Path(__file__).parent / "fixtures" / "vlm" / "judge_server.py"
MODEL = "tiny-vl"
JUDGE = "local-judge"
# One kit process (each spends ~15 s importing vlmeval) writes every prediction / data file with
# the kit's own writer (``dump``), reads our flags with the kit's own parser, and loads a model
# through our attention override.
_PROBE = """import importlib.util, inspect, json, sys
import pandas as pd
from vlmeval.smp import dump
files, worker_path, model_path, flags, result = sys.argv[1:6]
for path, rows in json.load(open(files)).items():
    dump(pd.DataFrame(rows), path)
spec = importlib.util.spec_from_file_location("worker", worker_path)
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
from vlmeval.run import parse_args
from vlmeval.vlm import Qwen2VLChat
import transformers
sys.argv = ["run.py", *json.loads(flags)]
args = parse_args()
worker._force_attention("sdpa")
model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path, attn_implementation="flash_attention_2")
open(result, "w").write(json.dumps({
    "args": {key: getattr(args, key) for key in ("config", "mode", "work_dir", "reuse", "judge", "judge_base_url",
                                                 "use_vllm", "api_nproc")},
    "qwen2vlchat": sorted(inspect.signature(Qwen2VLChat.__init__).parameters),
    "attn": model.config._attn_implementation}))
"""
_SITECUSTOMIZE = """import json, os
_md5 = json.loads(os.environ.get("DFT_MM_TEST_MD5", "{}"))
if _md5:
    from vlmeval.dataset import MathVerse, MathVision, WeMath
    for _cls in (MathVerse, MathVision, WeMath):
        _cls.DATASET_MD5.update({name: value for name, value in _md5.items() if name in _cls.DATASET_URL})
"""


@pytest.fixture(scope="module")
def kit_python() -> str:
    try:
        return find_kit_python()
    except UserError as err:
        pytest.fail(f"{err} (make setup installs it)")


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """``(base URL, request log)`` of a judge server process, stopped after the module."""
    log = tmp_path_factory.mktemp("judge") / "requests.jsonl"
    process = subprocess.Popen([sys.executable, str(JUDGE_SERVER), "--log", str(log)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        process.terminate()
        process.wait(timeout=10)


def _requests(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _prepare(kit_python: str, files: dict[Path, list[dict]], model: Path, work: Path) -> dict:
    """Write ``{path: rows}`` with the kit's ``dump``; return the kit's view of our flags,
    config keys and attention override."""
    work.mkdir(parents=True)
    source = work / "files.json"
    source.write_text(json.dumps({str(path): rows for path, rows in files.items()}))
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
    flags = vlmevalkit_arguments(work / "c.json", MODEL, list(ROWS), work, judge="gpt-4o-mini",
                                 judge_base_url="http://127.0.0.1:8000/v1", use_vllm=True, api_nproc=16)
    result = work / "probe.json"
    proc = subprocess.run([kit_python, "-c", _PROBE, str(source), str(WORKER), str(model), json.dumps(flags),
                           str(result)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"config": vlmevalkit_config(str(model), MODEL, list(ROWS)), "work": work, **json.loads(result.read_text())}


def _metrics(result: dict) -> dict:
    return {key: value for key, value in result.items()
            if key not in ("scorer", "judge", "judge_url", "system_prompt", "details", "score_file", "model", "benchmark")}


def _mathverse_row(index, version, answer, prediction, question_type="free-form", subject="plane geometry"):
    return {"index": index, "question": f"Question {index}", "question_for_eval": f"Question {index} for eval",
            "answer": answer, "question_type": question_type, "problem_version": version,
            "metadata": str({"split": "testmini", "subject": subject, "subfield": "length"}), "prediction": prediction}


MATHVERSE_ROWS = [
    _mathverse_row(1, "Vision Only", "3", "The sides add up, so the answer is 3."),  # exact: no judgement call
    _mathverse_row(2, "Vision Only", "2\\sqrt{3}", "Thus the answer is 2 \\sqrt{3}.", subject="functions"),  # judged 1
    _mathverse_row(3, "Vision Only", "B", "I cannot tell from the figure.", "multi-choice", "functions"),  # null
    _mathverse_row(4, "Vision Dominant", "5", "The answer is 5"),
    _mathverse_row(5, "Vision Dominant", "A", "The answer is C", "multi-choice", "functions"),  # judged 0
]


MATHVISION_ROWS = [
    {"index": 1, "question": "How many?", "answer": "3", "choices": "[]", "category": "counting", "prediction": "3"},
    {"index": 2, "question": "Which shape?", "answer": "B", "choices": "['circle', 'square', 'triangle']",
     "category": "counting", "prediction": "B"},
    {"index": 3, "question": "Area?", "answer": "1/2", "choices": "[]", "category": "area",
     "prediction": "It is half of the square, so the answer is 0.5."},  # judge extracts 0.5; is_equal(0.5, 1/2)
    {"index": 4, "question": "Side?", "answer": "4", "choices": "[]", "category": "area",
     "prediction": "I think the answer is 5."},
    {"index": 5, "question": "Which count?", "answer": "C", "choices": "['1', '2', '3']", "category": "counting",
     "prediction": "It could be A or B"},
]


def _wemath_row(index, problem, key, answer, prediction):
    return {"index": index, "ID": problem, "key": key, "question": f"{problem} {key}?", "A": "square", "B": "circle",
            "C": "triangle", "D": "hexagon", "answer": answer, "knowledge concept": "Area of Parallelograms",
            "prediction": prediction}


WEMATH_ROWS = [
    _wemath_row(1, "p1", "2steps_1", "A", "Answer: A."),  # the one form exact matching reads
    _wemath_row(2, "p1", "2steps_2", "B", "My final answer is (B), though C is close"),  # judge matches B
    _wemath_row(3, "p1", "2steps_multi", "C", "Answer: C."),
    _wemath_row(4, "p2", "2steps_1", "A", "The answer is D."),
    _wemath_row(5, "p2", "2steps_2", "B", "The answer is B."),
    _wemath_row(6, "p2", "2steps_multi", "C", "The answer is C."),
    _wemath_row(7, "p3", "3steps_1", "A", "The answer is A."),
    _wemath_row(8, "p3", "3steps_2", "B", "The answer is B."),
    _wemath_row(9, "p3", "3steps_3", "C", "The answer is C."),
    _wemath_row(10, "p3", "3steps_multi", "D", "The answer is A."),
]


ROWS = {"MathVerse_MINI": MATHVERSE_ROWS, "MathVision": MATHVISION_ROWS, "WeMath": WEMATH_ROWS}


def _patch_md5(patch: pytest.MonkeyPatch, tmp: Path, tsvs: dict[str, Path]) -> None:
    """Make the kit's processes accept ``tsvs`` as its benchmark files (see the module docstring)."""
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    patch.setenv("PYTHONPATH", str(site))
    patch.setenv("DFT_MM_TEST_MD5", json.dumps({name: hashlib.md5(path.read_bytes()).hexdigest()
                                                for name, path in tsvs.items()}))


def _fallback(kit_python: str, predictions: Path, out: Path) -> dict:
    """Our judged route with a judge that does not answer (nothing listens on port 9)."""
    try:
        score_with_kit(spec_for("WeMath"), predictions, out, judge_url="http://127.0.0.1:9/v1",
                       judge_model="gpt-4o-mini", kit_python=kit_python, retry=1)
    except UserError as err:
        return {"error": str(err), "kit_dir": out / "vlmevalkit"}
    return {"error": None, "kit_dir": out / "vlmevalkit"}


@pytest.fixture(scope="module")
def scored(kit_python, judge, tiny_vl_model, tmp_path_factory) -> dict:
    """All the kit work of this module, concurrently where it can be: every dataset's prediction file scored by the kit's runner (the
    installed package; a checkout's run.py for MathVision), by our judged route and by the
    proxy; the exact-matching fallback; the kit's view of our flags and attention override."""
    url, _ = judge
    tmp = tmp_path_factory.mktemp("scored")
    data, work, ours = tmp / "LMUData", tmp / "work", tmp / "ours"
    files = {}
    for dataset, rows in ROWS.items():
        files[data / f"{dataset}.tsv"] = [{k: v for k, v in row.items() if k != "prediction"} for row in rows]
        files[work / MODEL / f"{MODEL}_{dataset}.xlsx"] = rows
        files[tmp / "checkout_work" / MODEL / f"{MODEL}_{dataset}.xlsx"] = rows
        files[ours / f"{MODEL}_{dataset}.xlsx"] = rows
    flags = _prepare(kit_python, files, tiny_vl_model, tmp / "flags")
    checkout = tmp / "VLMEvalKit"  # a checkout's layout: run.py at the top (the package's own run.py)
    checkout.mkdir()
    kit_run_py = subprocess.run([kit_python, "-c", "import importlib.util; print(importlib.util.find_spec('vlmeval.run').origin)"],
                                capture_output=True, text=True, check=True).stdout.strip()
    (checkout / "run.py").write_text(Path(kit_run_py).read_text())

    def runner(datasets, folder, vlmevalkit=None):
        return run_vlmevalkit(MODEL, datasets, folder, kit_python=kit_python, judge=JUDGE, judge_base_url=url,
                              mode="eval", data_root=data, vlmevalkit=vlmevalkit, out=folder / "adapter")

    def judged(dataset):
        return score(dataset, ours / f"{MODEL}_{dataset}.xlsx", tmp / "judged" / dataset, judge=url,
                     judge_model=JUDGE, kit_python=kit_python)

    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(max_workers=4) as pool:
        _patch_md5(patch, tmp, {dataset: data / f"{dataset}.tsv" for dataset in ROWS})  # for the runners only
        installed = pool.submit(runner, list(ROWS), work)
        from_checkout = pool.submit(runner, ["MathVision"], tmp / "checkout_work", checkout)
        installed, from_checkout = installed.result(), from_checkout.result()
    with ThreadPoolExecutor(max_workers=4) as pool:
        ours_judged = {dataset: pool.submit(judged, dataset) for dataset in ROWS}
        fallback = pool.submit(_fallback, kit_python, ours / f"{MODEL}_WeMath.xlsx", tmp / "fallback")
        results = {"fallback": fallback.result(), "flags": flags, "checkout": from_checkout, "work": work}
        for dataset in ROWS:
            proxy = score(dataset, ours / f"{MODEL}_{dataset}.xlsx", tmp / "proxy" / dataset)
            runner_result = installed["results"][dataset]
            results[dataset] = {"runner": runner_result, "judged": ours_judged[dataset].result(), "proxy": proxy,
                                "adapter_json": json.loads((work / "adapter" / f"{dataset}_score.json").read_text())}
            print(json.dumps({"dataset": dataset, "vlmevalkit_runner": _metrics(runner_result),
                              "ours_judged": _metrics(results[dataset]["judged"]), "ours_judge_free": _metrics(proxy)}))
    return results


def test_mathverse_runner_and_judged_route_agree(scored, judge):
    runner, judged, proxy = (scored["MathVerse_MINI"][key] for key in ("runner", "judged", "proxy"))
    # by hand: Vision Only 2 of 3, Vision Dominant 1 of 2; Overall is the mean of the versions
    expected = {"Overall": (200 / 3 + 50) / 2, "Vision Only": 200 / 3, "Vision Dominant": 50.0}
    assert _metrics(runner) == pytest.approx(expected, abs=1e-9)
    assert _metrics(judged) == _metrics(runner)  # identical floats
    assert (runner["scorer"], runner["judge"], judged["scorer"], judged["judge"]) == (
        "vlmevalkit", JUDGE, "vlmevalkit", JUDGE)
    assert proxy["scorer"] == "judge-free" and proxy["judge"] is None
    kinds = {request["kind"] for request in _requests(judge[1])}
    assert {"mathverse_extract", "mathverse_score"} <= kinds
    assert {request["model"] for request in _requests(judge[1])} == {JUDGE}
    # the parser on the kit's own file gives the kit's own numbers
    score_file = Path(runner["score_file"])
    assert parse_score_file("MathVerse", score_file) == _metrics(runner)
    adapter_json = scored["MathVerse_MINI"]["adapter_json"]
    assert adapter_json["scorer"] == "vlmevalkit" and adapter_json["judge"] == JUDGE
    assert "system_prompt" in adapter_json


def test_mathvision_runner_and_judged_route_agree(scored, judge):
    runner, judged = scored["MathVision"]["runner"], scored["MathVision"]["judged"]
    assert _metrics(runner) == pytest.approx({"Overall": 60.0, "area": 50.0, "counting": 200 / 3}, abs=1e-9)
    assert _metrics(judged) == _metrics(runner)
    assert "mathvision_extract" in {request["kind"] for request in _requests(judge[1])}


def test_wemath_runner_and_judged_route_agree(scored, judge):
    runner, judged = scored["WeMath"]["runner"], scored["WeMath"]["judged"]
    # p1 complete mastery, p2 rote memorisation (strict; loose: mastery), p3 inadequate generalisation;
    # the kit divides by WeMath's 525 problems whatever the file holds
    strict, loose = (525 - 0.5 - 1) / 525 * 100, (525 - 0.5) / 525 * 100
    metrics = _metrics(runner)
    assert metrics["score_strict"] == round(strict, 2) and metrics["score_loose"] == round(loose, 2)
    assert (metrics["RM_strict"], metrics["RM_loose"], metrics["S1"]) == (50.0, 0.0, round(600 / 7, 2))
    assert _metrics(judged) == metrics and judged["judge"] == JUDGE
    assert "choice" in {request["kind"] for request in _requests(judge[1])}


def test_wemath_exact_matching_fallback_is_refused_or_labelled(scored):
    """A judge that does not answer: the kit falls back to exact matching and names the file
    after the judge; we refuse that number, or label it when exact matching was asked for."""
    assert "exact matching" in scored["fallback"]["error"]
    kit_dir = scored["fallback"]["kit_dir"]
    score_file = kit_dir / f"{MODEL}_WeMath_gpt4o-mini_score.csv"
    assert score_file.is_file()  # named after the judge all the same
    assert find_score_files(kit_dir, MODEL) == {"WeMath": {EXACT_MATCHING: score_file}}
    (kit_dir / MODEL).mkdir()
    for path in kit_dir.glob(f"{MODEL}_WeMath*"):
        path.rename(kit_dir / MODEL / path.name)
    with pytest.raises(UserError, match="pass --judge exact_matching"):
        collect_results(kit_dir, MODEL, ["WeMath"], judge="gpt-4o-mini")
    accepted = collect_results(kit_dir, MODEL, ["WeMath"], judge=EXACT_MATCHING)["WeMath"]
    assert accepted["judge"] == EXACT_MATCHING and accepted["scorer"] == "vlmevalkit"
    assert accepted["S1"] == round(100 / 7, 2)  # exact matching reads only "Answer: X": 1 of the 7 step rows


def test_kit_takes_our_flags_config_keys_and_attention(scored):
    """The kit's own argument parser reads the flags we pass through, Qwen2VLChat takes every
    key of our model entry, and the attention override reaches the model the kit would load
    (flash_attention_2 cannot load here: no flash-attn on a CPU machine)."""
    found, work = scored["flags"], scored["flags"]["work"]
    assert found["args"] == {"config": str(work / "c.json"), "mode": "all", "work_dir": str(work), "reuse": True,
                             "judge": "gpt-4o-mini", "judge_base_url": "http://127.0.0.1:8000/v1", "use_vllm": True,
                             "api_nproc": 16}
    model_entry = found["config"]["model"][MODEL]
    assert set(model_entry) - {"class"} <= set(found["qwen2vlchat"])
    assert model_entry["system_prompt"] == WETHINK_SYSTEM_PROMPT and model_entry["use_custom_prompt"] is False
    assert found["attn"] == "sdpa"


def test_checkout_runner_gives_the_same_numbers(scored):
    assert _metrics(scored["checkout"]["results"]["MathVision"]) == _metrics(scored["MathVision"]["runner"])
    assert "--checkout" in scored["checkout"]["command"]


def test_cli_parse_only_reads_the_kit_work_dir(scored, tmp_path):
    from dft_mm.cli import main

    code = main(["eval", "vlm", "vlmevalkit", "--model", MODEL, "--datasets", "MathVerse_MINI,MathVision,WeMath",
                 "--work-dir", str(scored["work"]), "--judge", JUDGE, "--parse-only", "--out", str(tmp_path)])
    assert code == 0
    table = (tmp_path / "vlm_table.csv").read_text().splitlines()
    expected = scored["WeMath"]["runner"]["score_strict"]
    assert table[1].startswith(f"{MODEL},66.67,,50.00,58.33,60.00,") and table[1].endswith(f"{expected:.2f}")
    record = json.loads((tmp_path / "WeMath_score.json").read_text())
    assert (record["scorer"], record["judge"]) == ("vlmevalkit", JUDGE)


def test_several_judges_for_one_dataset_are_refused(scored, tmp_path):
    """Two runs with different judges leave two score files; "newest wins" would mix judges."""
    import shutil

    shutil.copytree(scored["work"] / MODEL, tmp_path / MODEL)
    kit_file = tmp_path / MODEL / f"{MODEL}_MathVision_{JUDGE}_score.csv"
    shutil.copy(kit_file, kit_file.with_name(f"{MODEL}_MathVision_gpt-4o-mini_score.csv"))
    with pytest.raises(UserError, match="several judges"):
        collect_results(tmp_path, MODEL, ["MathVision"])
    assert collect_results(tmp_path, MODEL, ["MathVision"], judge=JUDGE)["MathVision"]["judge"] == JUDGE


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kit_generates_with_the_tiny_model_on_a_gpu(kit_python, tiny_vl_model, tmp_path):
    """The kit's Qwen2VLChat (it asserts a GPU) generates through our config, system prompt and
    attention override; the predictions land where --mode eval reads them."""
    from PIL import Image

    from dft_mm.evaluation.vlm.datasets import write_dataset_tsv

    tsv = write_dataset_tsv(tmp_path / "LMUData" / "MathVision.tsv", [
        {"index": 1, "image": Image.new("RGB", (56, 56), "red"), "question": "What colour?", "answer": "red",
         "choices": "[]", "category": "colour"},
        {"index": 2, "image": "1", "question": "How many squares?", "answer": "1", "choices": "[]", "category": "count"},
    ])
    with pytest.MonkeyPatch.context() as patch:
        _patch_md5(patch, tmp_path, {"MathVision": tsv})
        run_vlmevalkit(str(tiny_vl_model), "MathVision", tmp_path / "work", kit_python=kit_python, mode="infer",
                       attn_implementation="sdpa", data_root=tsv.parent, model_name=MODEL, max_new_tokens=8,
                       min_pixels=28 * 28, max_pixels=56 * 56)
    predictions = subprocess.run([kit_python, "-c", "import sys, pandas as pd; print(len(pd.read_excel(sys.argv[1])))",
                                  str(tmp_path / "work" / MODEL / f"{MODEL}_MathVision.xlsx")],
                                 capture_output=True, text=True, check=True)
    assert predictions.stdout.strip().endswith("2")
