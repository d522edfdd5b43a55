"""A real ``llamafactory-cli train`` of a tiny model, fused DFT head against ``dft_fused: false``.

``python -m dft_mm.bench.lf_check --out result.json --work DIR [--use-liger-kernel] [--steps N]``
builds a tiny Qwen2 and a synthetic dataset under ``DIR``, trains both runs for ``N`` steps
(bf16 on CUDA, fp32 on CPU) and writes their per-step ``loss`` / ``nll`` / ``grad_norm`` and the
largest relative difference; exits 1 unless every value agrees to ``--rel`` (default 1e-5).
``scripts/gpu_check.sh`` runs it on the GPU with Liger-Kernel's patched model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from dft_mm import durable

KEYS = ("loss", "nll", "grad_norm")


def _config(model: Path, data: Path, out: Path, steps: int, cuda: bool, liger: bool, fused: bool) -> dict:
    return {
        "model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "full",
        "dataset": "synthetic_code", "dataset_dir": str(data), "template": "empty", "cutoff_len": 128,
        "output_dir": str(out), "overwrite_output_dir": True, "per_device_train_batch_size": 4,
        "max_steps": steps, "logging_steps": 1, "learning_rate": 1e-3, "disable_shuffling": True,
        "report_to": "none", "save_strategy": "no", "seed": 0, "bf16": cuda, "use_cpu": not cuda,
        "use_liger_kernel": liger, "sft_loss": "dft", "dft_fused": fused,
    }


def _history(out: Path) -> list[dict]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [{key: entry[key] for key in KEYS} for entry in state["log_history"] if "loss" in entry]


def run(work: Path, steps: int, liger: bool) -> dict:
    import torch

    from dft_mm.llamafactory.commands import train
    from dft_mm.demo.synthetic import text_problems, write_text_training_set
    from dft_mm.demo.tiny import build_tiny_text

    cuda = torch.cuda.is_available()
    model = build_tiny_text(work / "model")
    data = work / "data"
    write_text_training_set(text_problems(16, seed=0), data)
    runs = {}
    for name, fused in (("fused", True), ("unfused", False)):
        out = work / name
        out.mkdir(parents=True, exist_ok=True)
        config = out / "train.yaml"
        config.write_text(yaml.safe_dump(_config(model, data, out, steps, cuda, liger, fused)))
        code = train(str(config), [])
        runs[name] = {"exit_code": code, "history": _history(out) if code == 0 else []}
    diffs = [
        abs(f[key] - u[key]) / max(abs(u[key]), 1e-30)
        for f, u in zip(runs["fused"]["history"], runs["unfused"]["history"]) for key in KEYS
    ]
    complete = all(len(r["history"]) == steps for r in runs.values())
    return {"device": "cuda" if cuda else "cpu", "use_liger_kernel": liger, "steps": steps, "runs": runs,
            "max_rel_diff": max(diffs) if complete and diffs else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dft_mm.bench.lf_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--work", required=True, help="folder for the model, data and runs")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--use-liger-kernel", action="store_true")
    parser.add_argument("--rel", type=float, default=1e-5, help="allowed relative difference per value")
    args = parser.parse_args(argv)
    result = run(Path(args.work), args.steps, args.use_liger_kernel)
    result["equal"] = result["max_rel_diff"] is not None and result["max_rel_diff"] <= args.rel
    durable.write_json(args.out, result, ensure_ascii=True, final_newline=False)
    print(json.dumps({k: result[k] for k in ("device", "use_liger_kernel", "max_rel_diff", "equal")}))
    return 0 if result["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
