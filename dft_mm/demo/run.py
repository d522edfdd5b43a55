"""``make demo`` / ``dft-mm demo``: SFT, DFT and DFT's published fixes (a weight floor, ASFT, EAFT)
on tiny offline models, in two regimes, 3 seeds.

The experiment, its hypotheses and its protocol are in ``docs/analysis.md`` (written before it
was measured). In short:

* **new knowledge** (tasks ``code`` and ``colours``): a base that only knows the format learns
  facts it does not know (write ``return x + 3`` from "Return x plus 3."; name a shape's
  colour). Predicted: SFT wins (the paper's stated limit).
* **noisy demonstrations** (task ``noisy-code``): a base already partly competent at the same
  skill is fine-tuned on demonstrations of which 40 % carry a wrong constant; it is scored on
  clean problems. Predicted: DFT wins (SFT's ``1/p`` weight chases the wrong targets).
* the DFT family (:data:`LOSS_KEYS`): DFT with a weight floor of 0.1, ASFT (KL to the base,
  ``asft_alpha`` 0.1) and EAFT (``eaft_alpha`` 1), each with its own predictions there.

Steps: build tiny random Qwen2 / Qwen2.5-VL models (:mod:`dft_mm.demo.tiny`); write the synthetic
data (:mod:`dft_mm.demo.synthetic`); train through the real ``llamafactory-cli train`` (random init ->
SFT warm start = the *base*; base -> each method, one run per seed, identical data and settings
but the loss keys and each method's selected schedule); score every model on held-out data with the real benchmark code (sandboxed
MultiPL-E execution; the VLM generation + judge-free scorer); run ``analyze tokens`` and
``report``. Trainings run ``--jobs`` at a time, each on one CPU thread, so a seed's result does
not depend on the machine's core count.

Exit code 1 unless every fine-tuned model (each seed, each method, each task) beats its base on
held-out data. Per task the verdict names the winner by the rule of ``docs/analysis.md``
(:func:`dft_mm.analysis.spread.rank`). Rerunning resumes: finished trainings, evaluations and analyses are kept; a
training whose settings or starting model changed is redone, and so is everything after it.

``dft-mm demo --select [--methods ...]`` runs the protocol's selection on the *validation* split
(the noisy regime's warm-start length and each method's learning rate and length) and writes
every validation score it looked at; the chosen values are the ones in :data:`dft_mm.demo.plan.TASKS`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import yaml

from dft_mm.demo import preloaded
from dft_mm.analysis.markdown import md_table
from dft_mm.analysis.spread import Spread, rank
from dft_mm.demo.plan import (COMPETENT, GRID, LABELS, LOSS_KEYS, METHODS, NOISE_FRACTION, PLANS, TASKS, VL_PIXELS,
                              WARM_CANDIDATES, DemoPlan, Schedule, Task)

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "WANDB_DISABLED": "true"}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRAIN_ENV = {**OFFLINE_ENV, **ONE_THREAD}  # every training's environment (dft_mm's hook on)


@dataclass(frozen=True)
class TaskData:
    """Where one task's data lives: training sets (warm start; per-seed demonstrations) and eval sets."""

    warm: Path
    demos: Callable[[int], Path] = field(hash=False)  # seed -> LLaMA-Factory dataset_dir
    heldout: Path  # MultiPL-E JSONL or VLMEvalKit TSV
    heldout_rows: Path  # the held-out set in training format, for `analyze tokens`
    validation: Path | None = None


@dataclass(frozen=True)
class Job:
    """One ``llamafactory-cli train`` run."""

    task: Task
    name: str  # report run name, e.g. "noisy-code/dft@1"
    run_dir: Path
    start: Path  # model it starts from
    data_dir: Path
    schedule: Schedule
    seed: int
    loss_keys: dict = field(hash=False)


def _log(message: str, started: float) -> None:
    print(f"[demo {time.monotonic() - started:6.0f}s] {message}", flush=True)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def _train_config(job: Job, plan: DemoPlan) -> dict:
    steps = job.schedule.steps if plan.max_steps is None else min(job.schedule.steps, plan.max_steps)
    return {
        "model_name_or_path": str(job.start), "stage": "sft", "do_train": True, "finetuning_type": "full",
        "dataset": job.task.dataset, "dataset_dir": str(job.data_dir), "template": job.task.template, "cutoff_len": 128,
        "output_dir": str(job.run_dir), "overwrite_output_dir": True, "per_device_train_batch_size": plan.batch_size,
        "max_steps": steps, "logging_steps": max(1, steps // 20), "learning_rate": job.schedule.lr,
        "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "report_to": "none", "save_strategy": "no",
        "seed": job.seed, "plot_loss": False, "dataloader_num_workers": 0, "preprocessing_num_workers": 1,
        # tiny models: recomputing activations only costs time (the results are the same, bit for bit)
        "disable_gradient_checkpointing": True,
        **job.task.extra, **job.loss_keys,
    }


def _is_done(job: Job, config: dict) -> bool:
    """A finished training with exactly this config, newer than the model it started from."""
    saved, state = job.run_dir / "demo_train.yaml", job.run_dir / "trainer_state.json"
    start = job.start / "model.safetensors"
    return (state.is_file() and (job.run_dir / "model.safetensors").is_file() and saved.is_file()
            and yaml.safe_load(saved.read_text()) == config
            and (not start.is_file() or start.stat().st_mtime < state.stat().st_mtime))


def _train(job: Job, plan: DemoPlan) -> bool:
    """Run ``job`` unless it is already done; returns True when it trained now (its results are new)."""
    config = _train_config(job, plan)
    if _is_done(job, config):
        return False
    shutil.rmtree(job.run_dir, ignore_errors=True)  # stale evaluations and analyses go with it
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "demo_train.yaml").write_text(yaml.safe_dump(config))
    # `llamafactory-cli train`, each in a fresh process forked from one that imported LLaMA-Factory once
    code = preloaded.train(job.run_dir / "demo_train.yaml", job.run_dir / "demo_train.log", TRAIN_ENV)
    if code != 0 or not (job.run_dir / "trainer_state.json").is_file():
        raise RuntimeError(f"llamafactory-cli train failed for {job.name} (exit code {code}); "
                           f"see {job.run_dir / 'demo_train.log'}")
    return True


def run_jobs(bases: list[Job], children: dict[str, list[Job]], plan: DemoPlan, workers: int,
             on_done: Callable[[Job, bool], None]) -> None:
    """Train ``bases``, then each base's ``children`` (keyed by the base's name), ``workers`` at a time.

    ``on_done(job, trained_now)`` runs in this thread as each training finishes (evaluation
    overlaps the trainings still running). A failure cancels what has not started and re-raises.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: dict[Future, Job] = {pool.submit(_train, job, plan): job for job in bases}
        try:
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = futures.pop(future)
                    trained_now = future.result()
                    for child in children.get(job.name, []):
                        futures[pool.submit(_train, child, plan)] = child
                    on_done(job, trained_now)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _prepare_data(out: Path, plan: DemoPlan) -> dict[str, TaskData]:
    from dft_mm.demo.synthetic import (
        corrupt_constants,
        split_sizes,
        text_problems,
        vl_problems,
        write_multipl_e_jsonl,
        write_text_training_set,
        write_vl_heldout_tsv,
        write_vl_training_set,
    )

    data = out / "data"
    sizes = plan.sizes
    code = data / "code"
    code_splits = split_sizes(text_problems(sum(sizes["code"].values()), seed=0), sizes["code"])
    write_text_training_set(code_splits["train"], code / "train")
    write_text_training_set(code_splits["heldout"], code / "heldout_rows")

    colours = data / "colours"
    vl_train = vl_problems(sizes["colours"]["train"], seed=1, image_dir=colours / "train" / "images")
    vl_held = vl_problems(sizes["colours"]["heldout"], seed=2, image_dir=colours / "heldout_rows" / "images")
    write_vl_training_set(vl_train, colours / "train")
    write_vl_training_set(vl_held, colours / "heldout_rows")

    noisy = data / "noisy-code"
    splits = split_sizes(text_problems(sum(sizes["noisy-code"].values()), seed=3), sizes["noisy-code"])
    write_text_training_set(splits["warm"], noisy / "warm")
    write_text_training_set(splits["heldout"], noisy / "heldout_rows")

    def noisy_demos(seed: int) -> Path:
        folder = noisy / f"demos-s{seed}"
        if not (folder / "dataset_info.json").is_file():
            rows = corrupt_constants(splits["demos"], NOISE_FRACTION, seed=seed)
            write_text_training_set(rows, folder)
            (folder / "corrupted.json").write_text(json.dumps([r["name"] for r in rows if r["corrupted"]], indent=1))
        return folder

    return {
        "code": TaskData(code / "train", lambda seed: code / "train",
                         write_multipl_e_jsonl(code_splits["heldout"], code / "heldout" / "synthetic-python.jsonl"), code / "heldout_rows" / "synthetic_code.json"),
        "colours": TaskData(colours / "train", lambda seed: colours / "train",
                            write_vl_heldout_tsv(vl_held, colours / "heldout" / "synthetic_colours.tsv"), colours / "heldout_rows" / "synthetic_colours.json"),
        "noisy-code": TaskData(noisy / "warm", noisy_demos, write_multipl_e_jsonl(splits["heldout"], noisy / "heldout" / "synthetic-python.jsonl"),
                               noisy / "heldout_rows" / "synthetic_code.json",
                               validation=write_multipl_e_jsonl(splits["validation"], noisy / "validation" / "synthetic-python.jsonl")),
    }


def evaluate(task: Task, model: Path, data: Path, out: Path) -> float:
    """Score (%) of ``model`` on ``data`` (kept in ``out``; an existing score file is reused).

    Text: MultiPL-E generation + sandboxed execution (pass@1). VL: the VLM generation +
    judge-free scorer (accuracy).
    """
    if task.kind == "text":
        from dft_mm.evaluation.code.generation import GenerationSettings, generate
        from dft_mm.evaluation.code.scoring import score

        done = out / "multipl-e-python_score.json"
        if done.is_file():
            return json.loads(done.read_text())["pass@1_percent"]
        samples = generate(model, "multipl-e-python", out, GenerationSettings(max_new_tokens=16, batch_size=64), data=data)
        return score("multipl-e-python", samples, out, data=data)["pass@1_percent"]
    from dft_mm.evaluation.vlm.generate import GenerationSettings
    from dft_mm.evaluation.vlm.generate import generate as generate_vl
    from dft_mm.evaluation.vlm.score import score as score_vl

    done = out / f"{data.stem}_score.json"
    if done.is_file():
        return json.loads(done.read_text())["Overall"]
    # the demo's VL data trains with the template's default system prompt, not WeThink's: no system turn here
    settings = GenerationSettings(backend="hf", max_new_tokens=40, batch_size=16, system_prompt=None, **VL_PIXELS)
    predictions = generate_vl(str(model), str(data), out, settings)
    return score_vl(str(data), predictions, out)["Overall"]


def _setup(out: Path, plan_name: str, workers: int | None):
    """Models, data and the worker count shared by the demo and the selection."""
    import torch

    from dft_mm.demo.tiny import build_tiny_text, build_tiny_vl

    os.environ.update(OFFLINE_ENV)
    torch.set_num_threads(1)  # evaluation and analysis in this process: same results on any machine
    models = out / "models"
    init = {
        "text": models / "text-init" if (models / "text-init" / "config.json").exists()
        else build_tiny_text(models / "text-init", hidden_size=96),
        "vl": models / "vl-init" if (models / "vl-init" / "config.json").exists() else build_tiny_vl(models / "vl-init"),
    }
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    return PLANS[plan_name], init, _prepare_data(out, PLANS[plan_name]), workers


def _finetune_jobs(task: Task, base: Job, data: TaskData, seeds: list[int], runs: Path,
                   schedules: dict[str, list[Schedule]] | None = None) -> list[Job]:
    """Every method of ``schedules`` (default: all, each at its chosen schedule) from ``base``, for every seed."""
    jobs = []
    for method, chosen in (schedules or {m: [task.finetune[m]] for m in METHODS}).items():
        for schedule in chosen:
            suffix = "" if schedules is None else f"-lr{schedule.lr:g}-n{schedule.steps}"
            for seed in seeds:
                jobs.append(Job(task, f"{task.name}/{method}{suffix}@{seed}", runs / f"{method}{suffix}-s{seed}",
                                base.run_dir, data.demos(seed), schedule, seed, LOSS_KEYS[method]))
    return jobs


def _write_results(out: Path, rows: list[dict], summary: list[dict]) -> Path:
    with (out / "demo_results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = ["regime", "task", "held-out metric", "init", "base", *(LABELS[m] for m in METHODS), "winner", "margin"]
    keys = ("regime", "task", "metric", "init", "base", *METHODS, "winner", "margin")
    lines = [md_table(header, [[str(item[key]) for key in keys] for item in summary])]
    lines += ["", "Methods: mean ± sd (min–max, n seeds) on the held-out split; every seed in demo_results.csv. Winner: the "
              "highest mean whose worst seed beats every other method's best seed, else no clear winner (the rule of "
              "docs/analysis.md); margin: the top mean minus the runner-up's."]
    path = out / "demo_results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(out: str | Path = "demo_out", plan_name: str = "full", seed: int = 0, workers: int | None = None) -> int:
    """Run the demo into ``out``; returns 0 when every fine-tuned model beats its base on held-out data."""
    from dft_mm.analysis.report import build_report
    from dft_mm.analysis.token_probs import analyze_tokens

    out, started = Path(out).resolve(), time.monotonic()
    load_at_start = _load()
    _log(f"building tiny models and synthetic data in {out} ({load_at_start})", started)
    plan, init, data, workers = _setup(out, plan_name, workers)
    seeds = list(range(seed, seed + plan.seeds))
    scores: dict[str, float] = {}
    bases, children, runs_of = [], {}, {}
    for task in TASKS:
        runs = out / "runs" / task.name
        base = Job(task, f"{task.name}/base", runs / "base", init[task.kind], data[task.name].warm, task.warm, seed, {})
        bases.append(base)
        children[base.name] = _finetune_jobs(task, base, data[task.name], seeds, runs)
        runs_of[task.name] = [base, *children[base.name]]
    _log(f"{len(bases)} warm starts, then {sum(map(len, children.values()))} fine-tunings, {workers} at a time "
         f"(tasks: {', '.join(t.name for t in TASKS)}; seeds {seeds})", started)
    for task in TASKS:  # the untrained start, scored while the warm starts train
        scores[f"{task.name}/init"] = evaluate(task, init[task.kind], data[task.name].heldout,
                                               out / "runs" / task.name / "init" / "eval" / "heldout")
    pending = {task.name: len(runs_of[task.name]) for task in TASKS}
    retrained: set[str] = set()

    def on_done(job: Job, trained_now: bool) -> None:
        name, task = job.name, job.task
        scores[name] = evaluate(task, job.run_dir, data[task.name].heldout, job.run_dir / "eval" / "heldout")
        _log(f"{name}: {'trained' if trained_now else 'kept from an earlier run'}; "
             f"held-out {task.metric} {scores[name]:.2f}", started)
        pending[task.name] -= 1
        retrained.update([task.name] if trained_now else [])
        if pending[task.name] == 0:
            analysis = runs_of[task.name][0].run_dir / "analysis"
            if task.name in retrained:  # analyze tokens resumes by model dir; these models are new
                shutil.rmtree(analysis, ignore_errors=True)
            _log(f"{task.name}: token-probability analysis of {len(runs_of[task.name])} models", started)
            analyze_tokens([f"{j.name}={j.run_dir}" for j in runs_of[task.name]], str(data[task.name].heldout_rows),
                           task.template, str(analysis), set_args=[f"{key}={value}" for key, value in task.extra.items()])

    run_jobs(bases, children, plan, workers, on_done)

    rows, summary, failures = [], [], []
    for task in TASKS:
        base = scores[f"{task.name}/base"]
        for label in ("init", "base"):
            rows.append({"regime": task.regime, "task": task.name, "model": label, "seed": "", "metric": task.metric,
                         "score": f"{scores[f'{task.name}/{label}']:.2f}"})
        spreads = {}
        for method in METHODS:
            values = [scores[f"{task.name}/{method}@{s}"] for s in seeds]
            spreads[method] = Spread(tuple(values))
            rows += [{"regime": task.regime, "task": task.name, "model": method, "seed": s, "metric": task.metric,
                      "score": f"{v:.2f}"} for s, v in zip(seeds, values)]
            failures += [f"{task.name}/{method}@{s} ({v:.2f}) did not beat {task.name}/base ({base:.2f})"
                         for s, v in zip(seeds, values) if v <= base]
        outcome = rank({LABELS[m]: spread for m, spread in spreads.items()})
        summary.append({"regime": task.regime, "task": task.name, "metric": task.metric,
                        "init": f"{scores[f'{task.name}/init']:.2f}", "base": f"{base:.2f}",
                        **{m: spread.text() for m, spread in spreads.items()},
                        "winner": outcome.text(), "margin": outcome.margin_text()})
    report_runs = []
    for task in TASKS:  # per task: init, base, then every method's seeds
        report_runs += [f"{task.name}/init={out / 'runs' / task.name / 'init'}"]
        report_runs += [f"{job.name}={job.run_dir}" for job in runs_of[task.name]]
    report = build_report(report_runs, str(out / "report"), title="make demo: SFT, DFT and its fixes on tiny models, held-out data",
                          task_notes={task.name: task.regime for task in TASKS})
    table = _write_results(out, rows, summary)
    seconds = round(time.monotonic() - started)
    print(table.read_text())
    (out / "demo_summary.json").write_text(json.dumps({
        "plan": plan_name, "seeds": seeds, "workers": workers, "summary": summary, "results": rows, "failures": failures,
        "seconds": seconds, "load_at_start": load_at_start, "load_at_end": _load()}, indent=2))
    _log(f"report: {report} (and report.html); results: {table}; {seconds} s ({_load()})", started)
    if failures and plan.require_improvement:
        print("demo FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    if plan.require_improvement:
        _log("demo passed: every fine-tuned model beat its base on held-out data", started)
    return 0


def choose_warm_start(bases: list[Job], scores: dict[str, float]) -> Job:
    """The shortest base within :data:`COMPETENT` on validation, else the one closest to its middle."""
    low, high = COMPETENT
    inside = [b for b in sorted(bases, key=lambda b: b.schedule.steps) if low <= scores[b.name] <= high]
    return inside[0] if inside else min(bases, key=lambda b: (abs(scores[b.name] - (low + high) / 2), b.schedule.steps))


def choose(scores: dict[Schedule, Spread]) -> Schedule:
    """The protocol's pick: highest mean; ties to fewer steps, then the smaller learning rate."""
    return max(scores, key=lambda s: (round(scores[s].mean, 6), -s.steps, -s.lr))


def select_settings(out: str | Path = "demo_select", plan_name: str = "full", seed: int = 0, workers: int | None = None,
                    warm_candidates: tuple[int, ...] = WARM_CANDIDATES, grid: tuple[Schedule, ...] = GRID,
                    methods: tuple[str, ...] = METHODS) -> dict:
    """The protocol's selection for ``noisy-code`` (for ``methods``), on its validation split only;
    writes ``out/selection.{md,json}``."""
    out, started = Path(out).resolve(), time.monotonic()
    plan, init, data, workers = _setup(out, plan_name, workers)
    task = next(t for t in TASKS if t.name == "noisy-code")
    task_data, runs = data[task.name], out / "runs" / task.name
    seeds = list(range(seed, seed + plan.seeds))
    scores: dict[str, float] = {}

    def on_done(job: Job, trained_now: bool) -> None:
        scores[job.name] = evaluate(task, job.run_dir, task_data.validation, job.run_dir / "eval" / "validation")
        _log(f"{job.name}: validation pass@1 {scores[job.name]:.2f}", started)

    bases = [Job(task, f"{task.name}/base-w{w}", runs / f"base-w{w}", init["text"], task_data.warm,
                 replace(task.warm, steps=w), seed, {}) for w in warm_candidates]
    run_jobs(bases, {}, plan, workers, on_done)
    base = choose_warm_start(bases, scores)
    _log(f"warm start: {base.schedule.steps} steps (validation {scores[base.name]:.2f})", started)
    jobs = _finetune_jobs(task, base, task_data, seeds, runs / f"w{base.schedule.steps}", {m: list(grid) for m in methods})
    run_jobs(jobs, {}, plan, workers, on_done)
    chosen, table = {}, []
    for method in methods:
        spreads = {s: Spread(tuple(scores[j.name] for j in jobs if j.name.startswith(f"{task.name}/{method}-")
                                   and j.schedule == s)) for s in grid}
        chosen[method] = choose(spreads)
        table += [[method, f"{s.lr:g}", str(s.steps), spreads[s].text(), "chosen" if s == chosen[method] else ""] for s in grid]
    result = {"warm_steps": {str(b.schedule.steps): scores[b.name] for b in bases}, "chosen_warm_steps": base.schedule.steps,
              "chosen": {m: {"steps": s.steps, "lr": s.lr} for m, s in chosen.items()}, "seeds": seeds,
              "validation_scores": scores, "seconds": round(time.monotonic() - started), "load_at_end": _load()}
    (out / "selection.json").write_text(json.dumps(result, indent=2))
    warm = [[str(b.schedule.steps), f"{scores[b.name]:.2f}{' (chosen)' if b is base else ''}"] for b in bases]
    lines = [md_table(["warm-start steps", "base validation pass@1 (%)"], warm), "",
             md_table(["method", "lr", "steps", "validation pass@1 (%), mean ± sd (min–max, n)", ""], table)]
    (out / "selection.md").write_text("\n".join(lines) + "\n")
    print((out / "selection.md").read_text())
    _log(f"selection: {out / 'selection.md'}", started)
    return result
