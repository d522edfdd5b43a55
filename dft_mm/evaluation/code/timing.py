"""Time scoring of one sample per problem for every MultiPL-E language, HumanEval and HumanEval+
(the ``docs/benchmarks.md`` numbers)::

    python -m dft_mm.evaluation.code.timing --multipl-e-dir ../shared/data/multipl-e --out /tmp/code-timing

MultiPL-E ships no reference solutions except Python's (the HumanEval-X style file carries
``canonical_solution``), so each other language gets a stand-in completion that compiles and
throws at run time: it pays the full compile + run cost that a real sample pays. HumanEval uses
its canonical solutions; HumanEval+ too, on a HumanEvalPlus file derived from HumanEval (see
:mod:`derived_plus`: ~760 inputs per task, as the release has) unless ``--humaneval-plus`` gives
the real one. Each benchmark is scored from scratch (a fresh output dir) with ``--workers``
sandboxes; prints one JSON line per benchmark and a total.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from dft_mm import durable
from dft_mm.evaluation.code import data as code_data
from dft_mm.evaluation.code import derived_plus
from dft_mm.evaluation.code.scoring import score

STAND_IN = {
    "cpp": "    throw 1;\n",
    "java": "        throw new RuntimeException();\n",
    "cs": "        throw new System.Exception();\n",
    "php": "    throw new Exception();\n}\n",
    "ts": "    throw new Error();\n}\n",
    "js": "    throw new Error();\n}\n",
    "sh": "    return 1\n",
}


def _samples(benchmark: str, problems: list[dict]) -> list[dict]:
    kind, lang = code_data.parse_benchmark(benchmark)
    if kind in ("humaneval", "humaneval+") or lang == "python":
        return [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
    return [{"task_id": p["task_id"], "completion": STAND_IN[lang]} for p in problems]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--multipl-e-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--humaneval-plus", default=None, help="EvalPlus's HumanEvalPlus.jsonl (default: derived)")
    parser.add_argument("--benchmarks", default="humaneval,humaneval+,multipl-e")
    args = parser.parse_args(argv)
    total = 0.0
    for benchmark in code_data.expand_benchmarks(args.benchmarks):
        kind, lang = code_data.parse_benchmark(benchmark)
        out = Path(args.out) / benchmark
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        data = Path(args.multipl_e_dir) / f"humaneval-{lang}.jsonl" if kind == "multipl-e" else None
        if kind == "humaneval+":
            data = args.humaneval_plus or derived_plus.write(derived_plus.derive(code_data.load_humaneval())[0],
                                                             out / "HumanEvalPlus-derived.jsonl")
        problems = code_data.load_problems(benchmark, data)
        samples = out / "samples.jsonl"
        durable.write_jsonl(samples, _samples(benchmark, problems), ensure_ascii=True)
        start = time.monotonic()
        result = score(benchmark, samples, out, workers=args.workers, data=data)
        seconds = time.monotonic() - start
        total += seconds
        print(json.dumps({"benchmark": benchmark, "problems": len(problems), "seconds": round(seconds, 1),
                          "per_program_s": round(seconds * args.workers / len(problems), 2),
                          "pass@1": result.get("pass@1"), "status": result.get("status", result.get("base_status")),
                          "load_avg_1m": os.getloadavg()[0]}), flush=True)
    print(json.dumps({"total_seconds": round(total, 1), "workers": args.workers}))


if __name__ == "__main__":
    main()
