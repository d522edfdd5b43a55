"""``dft-mm eval code run``: generate + score every requested benchmark, then the paper's table.

Layout of ``out``: ``<benchmark>/samples.jsonl``, its results and ``<benchmark>_score.json``
(see :mod:`scoring`), and ``code_table.csv`` / ``code_table.md`` with one row for the model.
Every stage resumes, so rerunning after an interruption redoes nothing that finished.
"""

from __future__ import annotations

from pathlib import Path

from dft_mm import durable
from dft_mm.evaluation.code import data as code_data
from dft_mm.evaluation.code.generation import GenerationSettings, generate
from dft_mm.evaluation.code.languages import check_toolchain
from dft_mm.evaluation.code.sandbox import check_bwrap
from dft_mm.evaluation.code.scoring import score
from dft_mm.evaluation.code.table import table_row, write_table


def _data_for(benchmark: str, multipl_e_dir: str | Path | None, humaneval_plus: str | Path | None):
    kind, language = code_data.parse_benchmark(benchmark)
    if kind == "humaneval+":
        return humaneval_plus
    if kind == "multipl-e" and multipl_e_dir is not None:
        return Path(multipl_e_dir) / f"humaneval-{language}.jsonl"
    return None


def run(model: str | Path, out: str | Path, benchmarks: str = "humaneval,humaneval+,multipl-e",
        settings: GenerationSettings = GenerationSettings(), *, workers: int | None = None,
        multipl_e_dir: str | Path | None = None, humaneval_plus: str | Path | None = None,
        model_name: str | None = None, evalplus_semantics: str = "release") -> dict[str, str]:
    """Generate, score and tabulate; returns the table row (also written to ``out/code_table.*``).

    ``multipl_e_dir`` holds local ``humaneval-<lang>.jsonl`` files (else the pinned HF dataset);
    ``humaneval_plus`` is EvalPlus's HumanEvalPlus.jsonl (else ``$HUMANEVAL_OVERRIDE_PATH``).
    All data and toolchains are checked before any generation starts.
    """
    names = code_data.expand_benchmarks(benchmarks)
    check_bwrap()
    for name in names:  # fail early: missing data or compilers
        code_data.load_problems(name, _data_for(name, multipl_e_dir, humaneval_plus))
        kind, language = code_data.parse_benchmark(name)
        if kind == "multipl-e":
            check_toolchain(language)
    out = Path(out)
    scores = {}
    for name in names:
        data = _data_for(name, multipl_e_dir, humaneval_plus)
        samples = generate(model, name, out / name, settings, data=data)
        scores[name] = score(name, samples, out / name, workers=workers, data=data,
                             evalplus_semantics=evalplus_semantics)
    row = table_row(model_name or Path(model).name, scores)
    csv_path, md_path = write_table(out, [row])
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {csv_path} and {md_path}")
    durable.write_json(out / "code_scores.json", scores, ensure_ascii=True, final_newline=False)
    return row
