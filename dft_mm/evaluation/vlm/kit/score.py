"""The judged route of ``dft-mm eval vlm score --judge URL``: VLMEvalKit's own evaluation of a
prediction file (its prompts, its judge calls, its post-processing, its files), so the number is
the kit's.

Per dataset the kit does (``ms-vlmeval`` 0.0.20):

- MathVerse: a judge call extracts the answer, a second one compares it with the answer in
  the light of ``question_for_eval`` (an exact string match skips the second call);
- MathVision: ``can_infer`` on the options (or ``is_equal`` on free-form answers) first, the
  judge's extraction when that fails, then ``is_equal``;
- WeMath: ``can_infer`` first, the judge's option matching when that fails.

The prediction file (ours or the kit's, ``<model>_<dataset>.tsv|.xlsx``) is copied into
``out/vlmevalkit/`` where the kit keeps its per-row caches (a rerun continues; a changed
prediction file starts them afresh) and writes its files, which
:mod:`dft_mm.evaluation.vlm.kit.files` reads.

Example::

    score_with_kit(spec_for("MathVerse_MINI"), Path("preds/m_MathVerse_MINI.tsv"), Path("out"),
                   judge_url="http://127.0.0.1:8000/v1", judge_model="Qwen2.5-72B-Instruct")
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.datasets import KNOWN_DATASETS, WEMATH, DatasetSpec
from dft_mm.evaluation.vlm.kit.files import EXACT_MATCHING, WEMATH_JUDGE_TAGS, parse_score_file, score_file_judge

KIT_FOLDER = "vlmevalkit"


def chat_url(url: str) -> str:
    """``.../v1`` or a server root becomes ``.../v1/chat/completions``; a full URL stays."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def _stage(predictions: Path, folder: Path, dataset: str) -> tuple[Path, str]:
    """Copy ``predictions`` to ``folder/<model>_<dataset><suffix>``; returns it and ``<model>``.
    A different earlier copy takes the kit's caches of it along when it goes."""
    stem = predictions.stem
    model = stem[:-len(dataset) - 1] if stem.endswith(f"_{dataset}") and len(stem) > len(dataset) + 1 else stem
    staged = folder / f"{model}_{dataset}{predictions.suffix.lower()}"
    folder.mkdir(parents=True, exist_ok=True)
    if staged.exists() and not filecmp.cmp(staged, predictions, shallow=False):
        stale = [path for path in folder.glob(f"{staged.stem}*") if path.is_file()]
        print(f"{predictions} changed since the last scoring: removing VLMEvalKit's {len(stale)} cached file(s) of it")
        for path in stale:
            path.unlink()
    if not staged.exists():
        shutil.copyfile(predictions, staged)
    return staged, model


def _score_file(staged: Path, spec: DatasetSpec, judge_model: str) -> Path:
    label = WEMATH_JUDGE_TAGS.get(judge_model, judge_model) if spec.benchmark == WEMATH else judge_model
    return staged.with_name(f"{staged.stem}_{label}_score.csv")


def score_with_kit(
    spec: DatasetSpec, predictions: Path, out: Path, *, judge_url: str, judge_model: str | None,
    workers: int = 8, kit_python: str | None = None, retry: int | None = None,
) -> dict:
    """Run the kit's evaluation of ``predictions``; returns ``{metrics..., "scorer", "judge",
    "judge_url", "details"}``. A WeMath file the kit scored by exact matching (its silent
    fallback when the judge does not answer) is refused."""
    from dft_mm.evaluation.vlm.kit.environment import find_kit_python, kit_environment, run_kit_worker

    if spec.name not in KNOWN_DATASETS:
        raise UserError(f"--judge scores with VLMEvalKit's own procedure, which exists for its datasets only "
                        f"({', '.join(KNOWN_DATASETS)}); score {spec.name} without --judge")
    if not judge_model:
        raise UserError("--judge needs --judge-model: the model name the server serves "
                        "(e.g. gpt-4o-mini at OpenAI, or the name given to `vllm serve`)")
    python = find_kit_python(kit_python)
    staged, model = _stage(Path(predictions), Path(out) / KIT_FOLDER, spec.name)
    arguments = ["evaluate", "--benchmark", spec.benchmark, "--dataset", spec.name, "--eval-file", str(staged),
                 "--judge", judge_model, "--api-base", chat_url(judge_url), "--nproc", str(workers)]
    if retry is not None:
        arguments += ["--retry", str(retry)]
    # the judge is judge_model at judge_url: nothing taken from LOCAL_LLM / OPENAI_API_BASE
    run_kit_worker(python, arguments, env=kit_environment(LOCAL_LLM=None, OPENAI_API_BASE=None),
                   what=f"VLMEvalKit's {spec.benchmark} evaluation with judge {judge_model} at {judge_url}")
    score_file = _score_file(staged, spec, judge_model)
    if not score_file.is_file():
        raise UserError(f"VLMEvalKit finished without writing {score_file}; see its log above")
    _, judge = score_file_judge(score_file, model)
    if judge == EXACT_MATCHING:
        raise UserError(f"{score_file}: VLMEvalKit scored {spec.name} by exact matching (a literal 'Answer: X') "
                        f"because the judge {judge_model} at {judge_url} did not answer its probe; check the server "
                        "and rerun (the kit's file names it after the judge all the same)")
    metrics = parse_score_file(spec.benchmark, score_file)
    files = sorted(str(path) for path in staged.parent.glob(f"{staged.stem}_*") if path.is_file())
    return {**metrics, "scorer": "vlmevalkit", "judge": judge, "judge_url": judge_url,
            "details": {"dataset": spec.name, "benchmark": spec.benchmark, "predictions": str(predictions),
                        "score_file": str(score_file), "kit_files": files}}
