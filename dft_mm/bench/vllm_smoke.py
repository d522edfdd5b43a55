"""Smoke test of the vLLM generation backends with the tiny models (GPU machines).

``python -m dft_mm.bench.vllm_smoke --out result.json --work DIR`` runs
``dft-mm eval code generate --backend vllm`` and ``dft-mm eval vlm generate --backend vllm`` on
a tiny model and two synthetic problems each, and writes what happened. Without an importable
``vllm`` it writes ``{"skipped": reason}`` and exits 0: a missing optional backend is a fact to
report, not a failure of the check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from dft_mm import durable


def _vllm_missing() -> str | None:
    try:
        import vllm  # noqa: F401
    except Exception as err:  # ImportError, or a broken install that fails while importing
        return f"vllm is not importable here ({type(err).__name__}: {err})"
    return None


def _generate(kind: str, args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dft_mm", "eval", kind, "generate", "--backend", "vllm", *args],
                          capture_output=True, text=True)
    return {"exit_code": proc.returncode, "stderr_tail": proc.stderr[-1500:]}


def run(work: Path) -> dict:
    from dft_mm.demo.synthetic import text_problems, vl_problems, write_multipl_e_jsonl, write_vl_heldout_tsv
    from dft_mm.demo.tiny import build_tiny_text, build_tiny_vl

    text_model, vl_model = build_tiny_text(work / "text_model"), build_tiny_vl(work / "vl_model")
    problems = write_multipl_e_jsonl(text_problems(2, seed=0), work / "data" / "synthetic-python.jsonl")
    images = vl_problems(2, seed=0, image_dir=work / "data" / "images")
    tsv = write_vl_heldout_tsv(images, work / "data" / "synthetic_colours.tsv")
    code = _generate("code", ["--model", str(text_model), "--benchmark", "multipl-e-python", "--data", str(problems),
                              "--out", str(work / "code"), "--max-new-tokens", "32"])
    vlm = _generate("vlm", ["--model", str(vl_model), "--dataset", str(tsv), "--out", str(work / "vlm"),
                            "--max-new-tokens", "16"])
    return {"code_generate": code, "vlm_generate": vlm, "ok": code["exit_code"] == 0 and vlm["exit_code"] == 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dft_mm.bench.vllm_smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--work", required=True, help="folder for the tiny models, data and outputs")
    args = parser.parse_args(argv)
    missing = _vllm_missing()
    result = {"skipped": missing} if missing else run(Path(args.work))
    durable.write_json(args.out, result, ensure_ascii=True, final_newline=False)
    print(json.dumps(result)[:2000])
    return 0 if missing or result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
