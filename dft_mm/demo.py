"""``make demo`` / ``dft-mm demo``: the whole pipeline on tiny offline models, end to end.

1. build tiny random Qwen2 (text) and Qwen2.5-VL models (:mod:`dft_mm.tiny`);
2. write synthetic tasks a tiny model can learn (:mod:`dft_mm.synthetic`): training sets in
   the converters' formats, held-out sets as a MultiPL-E JSONL and a VLMEvalKit TSV;
3. train through the real ``llamafactory-cli train``: a short SFT warm start from the random
   init (the "base" model: DFT needs targets with non-negligible probability), then SFT and
   DFT from that base with identical settings but the loss keys;
4. score every model on the held-out sets with the real benchmark code (sandboxed MultiPL-E
   execution; the VLM generation + judge-free scorer);
5. run ``analyze tokens`` and ``report``; print the results table and where the report is.

The demo fails (exit code 1) unless both fine-tuned models beat their base on held-out data.
Rerunning resumes: finished trainings and evaluations are kept.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "WANDB_DISABLED": "true"}
VL_PIXELS = {"min_pixels": 28 * 28, "max_pixels": 112 * 112}


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run."""

    text_problems: int  # synthetic text problems, training + held-out
    text_heldout: int
    vl_train: int
    vl_heldout: int
    warm_steps: int  # SFT steps from the random init to the base model
    finetune_steps: int  # SFT and DFT steps from the base model
    batch_size: int
    require_improvement: bool  # fail unless SFT and DFT beat the base on held-out data


PLANS = {
    "full": DemoPlan(text_problems=240, text_heldout=40, vl_train=160, vl_heldout=32, warm_steps=100, finetune_steps=100, batch_size=16,
                    require_improvement=True),
    "smoke": DemoPlan(text_problems=48, text_heldout=8, vl_train=16, vl_heldout=4, warm_steps=4, finetune_steps=3, batch_size=4,
                     require_improvement=False),
}


@dataclass(frozen=True)
class Task:
    """One modality of the demo: its data, template and evaluation."""

    name: str  # "text" | "vl"
    dataset: str
    template: str
    extra: dict  # more LLaMA-Factory keys


def _log(message: str, started: float) -> None:
    print(f"[demo {time.monotonic() - started:6.0f}s] {message}", flush=True)


def _train(task: Task, model: Path, run_dir: Path, data_dir: Path, steps: int, lr: float, plan: DemoPlan, loss_keys: dict) -> Path:
    """One ``llamafactory-cli train`` run (skipped when its model is already saved)."""
    if (run_dir / "model.safetensors").exists():
        return run_dir
    config = {
        "model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "full",
        "dataset": task.dataset, "dataset_dir": str(data_dir), "template": task.template, "cutoff_len": 128,
        "output_dir": str(run_dir), "overwrite_output_dir": True, "per_device_train_batch_size": plan.batch_size,
        "max_steps": steps, "logging_steps": max(1, steps // 10), "learning_rate": lr, "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05, "report_to": "none", "save_strategy": "no", "seed": 0, "plot_loss": False,
        **task.extra, **loss_keys,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "demo_train.yaml").write_text(yaml.safe_dump(config))
    cli = Path(sys.executable).parent / "llamafactory-cli"
    env = {**os.environ, **OFFLINE_ENV, "PATH": f"{cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("DFT_MM_DISABLE", None)
    with (run_dir / "demo_train.log").open("w") as log:
        code = subprocess.call([str(cli), "train", str(run_dir / "demo_train.yaml")], stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise RuntimeError(f"llamafactory-cli train failed for {run_dir}; see {run_dir / 'demo_train.log'}")
    return run_dir


def _prepare_data(out: Path, plan: DemoPlan) -> dict[str, Path]:
    from PIL import Image

    from dft_mm.evaluation.vlm.datasets import write_dataset_tsv
    from dft_mm.synthetic import (
        split_problems,
        text_problems,
        vl_problems,
        write_multipl_e_jsonl,
        write_text_training_set,
        write_vl_training_set,
    )

    data = out / "data"
    train, held = split_problems(text_problems(plan.text_problems, seed=0), plan.text_heldout)
    write_text_training_set(train, data / "text")
    write_text_training_set(held, data / "text_heldout")  # training format: for analyze tokens
    vl_train = vl_problems(plan.vl_train, seed=1, image_dir=data / "vl" / "images")
    vl_held = vl_problems(plan.vl_heldout, seed=2, image_dir=data / "vl_heldout" / "images")
    write_vl_training_set(vl_train, data / "vl")
    write_vl_training_set(vl_held, data / "vl_heldout")
    rows = [
        {"index": p["index"], "image": Image.open(p["image_path"]), "question": p["question"], "answer": p["answer"], "category": "colour"}
        for p in vl_held
    ]
    return {
        "text": data / "text",
        "vl": data / "vl",
        "text_heldout": write_multipl_e_jsonl(held, data / "heldout" / "synthetic-python.jsonl"),
        "text_heldout_train_format": data / "text_heldout" / "synthetic_code.json",
        "vl_heldout": write_dataset_tsv(data / "heldout" / "synthetic_colours.tsv", rows),
        "vl_heldout_train_format": data / "vl_heldout" / "synthetic_colours.json",
    }


def _evaluate_text(model: Path, heldout: Path, out: Path) -> float:
    """Held-out pass@1 (%) through the MultiPL-E generation + sandboxed scoring code."""
    from dft_mm.evaluation.code.generation import generate
    from dft_mm.evaluation.code.scoring import score

    samples = generate(model, "multipl-e-python", out, data=heldout, max_new_tokens=16, batch_size=64)
    return score("multipl-e-python", samples, out, data=heldout)["pass@1_percent"]


def _evaluate_vl(model: Path, heldout: Path, out: Path) -> float:
    """Held-out accuracy (%) through the VLM generation + judge-free scoring code."""
    from dft_mm.evaluation.vlm.generate import generate_predictions
    from dft_mm.evaluation.vlm.score import score_predictions

    predictions = generate_predictions(str(model), str(heldout), out, backend="hf", max_new_tokens=40, batch_size=16, **VL_PIXELS)
    return score_predictions(str(heldout), predictions, out)["Overall"]


def _write_results(out: Path, results: list[dict]) -> Path:
    columns = ["task", "model", "held-out metric", "score (%)"]
    with (out / "demo_results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(results)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in results]
    path = out / "demo_results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(out: str | Path = "demo_out", plan_name: str = "full") -> int:
    """Run the demo into ``out``; returns 0 when SFT and DFT both beat their base model."""
    from dft_mm.analysis.report import build_report
    from dft_mm.analysis.token_probs import analyze_tokens
    from dft_mm.tiny import build_tiny_text, build_tiny_vl

    os.environ.update(OFFLINE_ENV)
    plan, out, started = PLANS[plan_name], Path(out).resolve(), time.monotonic()
    models, runs = out / "models", out / "runs"
    _log(f"building tiny models and synthetic data in {out}", started)
    init = {
        "text": models / "text-init" if (models / "text-init").exists() else build_tiny_text(models / "text-init", hidden_size=96),
        "vl": models / "vl-init" if (models / "vl-init").exists() else build_tiny_vl(models / "vl-init"),
    }
    data = _prepare_data(out, plan)
    tasks = {
        "text": Task("text", "synthetic_code", "empty", {}),
        "vl": Task("vl", "synthetic_colours", "qwen2_vl", {"image_max_pixels": VL_PIXELS["max_pixels"], "freeze_vision_tower": False}),
    }
    evaluate = {"text": (_evaluate_text, data["text_heldout"], "MultiPL-E-format pass@1"),
                "vl": (_evaluate_vl, data["vl_heldout"], "VLMEvalKit-format accuracy")}
    results, failures = [], []
    for name, task in tasks.items():
        _log(f"{name}: SFT warm start from the random init ({plan.warm_steps} steps) -> base", started)
        base = _train(task, init[name], runs / f"{name}-base", data[name], plan.warm_steps, 3e-3, plan, {})
        trained = {"init": init[name], "base": base}
        for loss, keys in (("sft", {"sft_loss": "nll"}), ("dft", {"sft_loss": "dft"})):
            _log(f"{name}: {loss.upper()} from base ({plan.finetune_steps} steps)", started)
            trained[loss] = _train(task, base, runs / f"{name}-{loss}", data[name], plan.finetune_steps, 2e-3, plan, keys)
        scorer, heldout, metric = evaluate[name]
        scores = {}
        for label, model in trained.items():
            _log(f"{name}: evaluating {label} on the held-out set", started)
            scores[label] = scorer(model, heldout, runs / f"{name}-{label}" / "eval")
            results.append({"task": name, "model": f"{name}-{label}", "held-out metric": metric, "score (%)": f"{scores[label]:.2f}"})
        failures += [f"{name}-{loss} ({scores[loss]:.2f}%) did not beat {name}-base ({scores['base']:.2f}%)"
                     for loss in ("sft", "dft") if scores[loss] <= scores["base"]]
        _log(f"{name}: token-probability analysis", started)
        analyze_tokens(
            [f"{label}={trained[label]}" for label in ("base", "sft", "dft")],
            str(data[f"{name}_heldout_train_format"]), task.template, str(runs / f"{name}-dft" / "analysis"),
            set_args=[f"{key}={value}" for key, value in task.extra.items()],
        )
    report = build_report([f"{name}-{label}={runs / f'{name}-{label}'}" for name in tasks for label in ("base", "sft", "dft")], str(out / "report"))
    table = _write_results(out, results)
    print(table.read_text())
    (out / "demo_summary.json").write_text(json.dumps({"results": results, "failures": failures, "seconds": round(time.monotonic() - started)}, indent=2))
    _log(f"report: {report} (and report.html); results: {table}", started)
    if failures and plan.require_improvement:
        print("demo FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    if plan.require_improvement:
        _log("demo passed: SFT and DFT both beat their base model on held-out data", started)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the whole pipeline on tiny offline models (what `make demo` runs)")
    parser.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    parser.add_argument("--plan", choices=sorted(PLANS), default="full", help="full (the demo) or smoke (tests)")
    parser.set_defaults(handler=lambda args: run_demo(args.out, args.plan))
