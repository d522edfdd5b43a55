"""``python -m dft_mm.bench.summary OUT_DIR``: the Markdown summary of ``scripts/gpu_check.sh``.

Reads the section outcomes (``sections.jsonl``), the machine (``env.json``), the benchmark
JSON lines (``head_16k.jsonl``, ``head_64k.jsonl``, ``head_chunks.jsonl``, ``step.jsonl``), the
GPU tests' JUnit XML and the LLaMA-Factory and vLLM checks, and prints tables plus every
target of issue "On the accelerator" with its measured value and whether it is met.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from dft_mm.analysis.markdown import md_table

FUSED = ("triton", "chunked_torch")


def _lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "_no results_\n"
    cells = [[str(row[col] if col == "method" else row.get(col, row.get("skipped") or row.get("error") or "—"))
              for col in columns] for row in rows]
    return md_table(columns, cells) + "\n"


def _by_method(records: list[dict], **match) -> dict[str, dict]:
    return {r["method"]: r for r in records if all(r.get(k) == v for k, v in match.items())}


def _check(name: str, value, limit, ok: bool | None) -> str:
    verdict = "n/a" if ok is None else ("met" if ok else "**not met**")
    return f"| {name} | {value if value is not None else '—'} | {limit} | {verdict} |"


def head_targets(head_16k: list[dict], head_64k: list[dict], label: str = "") -> list[str]:
    rows = []
    if not head_16k:
        return rows
    m16, m64 = _by_method(head_16k), _by_method(head_64k)
    gemms = m16.get("gemms", {}).get("median_ms")
    liger_dft = m16.get("liger_dft", {}).get("median_ms")
    for method in FUSED:
        r16, r64 = m16.get(method, {}), m64.get(method, {})
        method = label + method
        ms = r16.get("median_ms")
        rows.append(_check(f"{method}: fwd+bwd ms at 16k <= 1.10 x GEMMs", ms, None if gemms is None else round(1.1 * gemms, 1),
                           None if ms is None or gemms is None else ms <= 1.1 * gemms))
        rows.append(_check(f"{method}: faster than Liger token scaling (16k)", ms, liger_dft,
                           None if ms is None or liger_dft is None else ms < liger_dft))
        for tokens, record, limit in ((16384, r16, 1.3), (65536, r64, 2.0))[: 2 if m64 else 1]:
            extra = record.get("peak_extra_mib")
            gib = None if extra is None else round(extra / 1024, 2)
            rows.append(_check(f"{method}: peak extra GiB at {tokens}", gib, limit, None if gib is None else gib <= limit))
        err = r16.get("grad_rel_err_weight")
        floor = r16.get("grad_floor_weight")
        limit = max(1e-3, 1.5 * floor) if floor is not None else 1e-3
        rows.append(_check(f"{method}: weight-gradient rel. error vs fp64 (16k)", err, f"{limit:.2e}",
                           None if err is None else err <= limit))
    return rows


def step_targets(step: list[dict]) -> list[str]:
    rows = []
    for tokens in sorted({r["tokens"] for r in step}):
        methods = _by_method(step, tokens=tokens)
        hf_ms = methods.get("hf_ce", {}).get("median_ms")
        liger_peak = methods.get("liger_ce", {}).get("peak_gib")
        for method in ("dft_fused_torch", "dft_fused_triton"):
            record = methods.get(method, {})
            peak, ms = record.get("peak_gib"), record.get("median_ms")
            rows.append(_check(f"{method} step at {tokens}: peak GiB <= Liger SFT", peak, liger_peak,
                               None if peak is None or liger_peak is None else peak <= liger_peak))
            rows.append(_check(f"{method} step at {tokens}: ms <= 1.02 x HF SFT", ms,
                               None if hf_ms is None else round(1.02 * hf_ms, 1),
                               None if ms is None or hf_ms is None else ms <= 1.02 * hf_ms))
    return rows


def _junit(path: Path) -> str:
    if not path.is_file():
        return "no JUnit file"
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    get = lambda key: int(suite.get(key, 0))  # noqa: E731
    return f"{get('tests')} tests, {get('failures')} failures, {get('errors')} errors, {get('skipped')} skipped"


def summarize(out: Path) -> str:
    env = _json(out / "env.json") or {}
    sections = _lines(out / "sections.jsonl")
    head_16k, head_64k = _lines(out / "head_16k.jsonl"), _lines(out / "head_64k.jsonl")
    head_fp32 = _lines(out / "head_16k_fp32_logits.jsonl")
    chunks, step = _lines(out / "head_chunks.jsonl"), _lines(out / "step.jsonl")
    lf, vllm = _json(out / "llamafactory_liger.json"), _json(out / "vllm.json")
    head_cols = ["method", "median_ms", "peak_extra_mib", "grad_rel_err_hidden", "grad_rel_err_weight", "grad_floor_weight"]
    parts = [
        "# GPU check", "",
        f"Machine: {env.get('device', '?')} (sm_{''.join(map(str, env.get('capability', [])))}), torch {env.get('torch', '?')}, "
        f"CUDA {env.get('cuda', '?')}, triton {env.get('triton', '?')}, transformers {env.get('transformers', '?')}, "
        f"liger-kernel {env.get('liger_kernel', '?')}, llamafactory {env.get('llamafactory', '?')}, vllm {env.get('vllm', '?')}.", "",
        "## Sections", "", _table(sections, ["section", "rc", "seconds"]),
        f"GPU tests: {_junit(out / 'gpu_tests.xml')}.", "",
        "## LM head + DFT loss, fwd+bwd, bf16, H = 3584, V = 152064", "",
        "### 16384 tokens", "", _table(head_16k, head_cols),
        "### 16384 tokens, fused methods with fp32 logits (`--fp32-logits`)", "", _table(head_fp32, head_cols),
        "### 65536 tokens", "", _table(head_64k, head_cols),
        "### chunk-size sweep (16384 tokens)", "", _table(chunks, ["method", "chunk_size", "median_ms", "peak_extra_mib"]),
        "## Whole training step (Qwen2.5-Coder-3B shape, random weights, bf16, gradient checkpointing)", "",
        _table(step, ["method", "tokens", "median_ms", "peak_gib", "model_gib", "loss"]),
        "## Targets", "", "| target | measured | limit | verdict |", "|---|---|---|---|",
        *head_targets(head_16k, head_64k), *head_targets(head_fp32 + [r for r in head_16k if r["method"] in ("gemms", "liger_dft")], [], "fp32 logits "), *step_targets(step), "",
        "## llamafactory-cli train, use_liger_kernel + sft_loss: dft, fused vs dft_fused: false", "",
        ("_not run_" if lf is None else f"max relative difference {lf.get('max_rel_diff')}, equal: {lf.get('equal')}"), "",
        "## vLLM generation smoke", "",
        ("_not run_" if vllm is None else vllm.get("skipped") or f"ok: {vllm.get('ok')}"), "",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m dft_mm.bench.summary OUT_DIR (the folder scripts/gpu_check.sh wrote)", file=sys.stderr)
        return 2
    print(summarize(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
