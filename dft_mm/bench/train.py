"""``dft-mm bench train``: whole ``llamafactory-cli train`` runs per SFT objective, dft_mm's and
LLaMA-Factory's own (``DFT_MM_DISABLE=1``), side by side in one invocation.

One tiny random Qwen2 with a real vocabulary size (default Qwen's 151,936: the LM head is
then most of the work, as in real models) trains a few steps on rows of exactly
``--seq-len`` supervised-heavy tokens. Each method runs alone, one after the other, in its own
process; for each, one JSON line: the process's peak resident memory (its high-water mark,
``getrusage`` of the finished child), the trainer's own ``train_runtime`` (the steps alone)
and the whole process's wall time, the first and last logged loss. A method whose resident
memory passes ``--memory-cap-gib`` is stopped there (``killed``), so a method that would
exhaust the machine reports that instead of taking the machine down.

Methods (``--methods``, comma-separated; default all but the LoRA ones):

* ``nll``, ``dft``, ``asft``, ``eaft``: ``sft_loss: <objective>`` (dft_mm);
* ``upstream_sft``, ``upstream_dft``, ``upstream_asft``, ``upstream_eaft``: no key /
  ``use_dft_loss`` / ``use_asft_loss`` / ``use_eaft_loss: true`` with ``DFT_MM_DISABLE=1``;
* ``lora_dft``, ``lora_asft``: LoRA (rank 8, every linear layer), dft_mm (ASFT's reference
  is the base model with the adapters disabled).

Example::

    dft-mm bench train --batch 4 --seq-len 1024 --steps 3 --methods dft,asft,eaft,upstream_eaft,upstream_asft
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from dft_mm.analysis.markdown import md_table
from dft_mm.bench.head import emit
from dft_mm.errors import UserError

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "WANDB_DISABLED": "true"}
LORA = {"finetuning_type": "lora", "lora_rank": 8, "lora_alpha": 16, "lora_target": "all"}
METHODS = {
    "nll": ({"sft_loss": "nll"}, False),
    "dft": ({"sft_loss": "dft"}, False),
    "asft": ({"sft_loss": "asft"}, False),
    "eaft": ({"sft_loss": "eaft"}, False),
    "upstream_sft": ({}, True),
    "upstream_dft": ({"use_dft_loss": True}, True),
    "upstream_asft": ({"use_asft_loss": True}, True),
    "upstream_eaft": ({"use_eaft_loss": True}, True),
    "lora_dft": ({"sft_loss": "dft", **LORA}, False),
    "lora_asft": ({"sft_loss": "asft", **LORA}, False),
}
DEFAULT_METHODS = tuple(name for name in METHODS if not name.startswith("lora"))
BASELINE = "dft"  # the ratios in the summary are against dft_mm's DFT (its LoRA one for LoRA methods)


def _write_data(folder: Path, rows: int, seq_len: int) -> None:
    """``rows`` alpaca samples whose answers are longer than ``seq_len`` tokens (cut there)."""
    from dft_mm.demo.synthetic import text_problems, write_text_training_set

    problems = text_problems(rows, seed=0)
    repeats = seq_len // 4 + 1  # each completion is ~5 tokens of the tiny tokenizer: the rows are cut at seq_len
    write_text_training_set([{**p, "completion": p["completion"] * repeats} for p in problems], folder)


def _config(model: Path, data: Path, out: Path, keys: dict, batch: int, seq_len: int, steps: int) -> dict:
    return {
        "model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "full",
        "dataset": "synthetic_code", "dataset_dir": str(data), "template": "empty", "cutoff_len": seq_len,
        "output_dir": str(out), "overwrite_output_dir": True, "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1, "max_steps": steps, "logging_steps": 1, "learning_rate": 1e-4,
        "report_to": "none", "save_strategy": "no", "dataloader_num_workers": 0, "preprocessing_num_workers": 1,
        "disable_shuffling": True, "seed": 0, "plot_loss": False, **keys,
    }


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def _run(config_path: Path, env: dict, cap_bytes: int, log_path: Path) -> dict:
    """Run one training; peak RSS from the finished child's rusage, killed past ``cap_bytes``."""
    cli = Path(sys.executable).parent / "llamafactory-cli"
    started = time.monotonic()
    killed, done = {"rss": 0}, threading.Event()
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(cli), "train", str(config_path)], stdout=log, stderr=subprocess.STDOUT, env=env)

        def watch():  # never reaps the child (os.wait4 below does, for its rusage)
            while not done.wait(0.1):
                rss = _rss_bytes(proc.pid)
                if rss > cap_bytes:
                    killed["rss"] = rss
                    os.kill(proc.pid, 9)
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
        watcher.join()
    record = {"returncode": proc.returncode, "wall_s": round(time.monotonic() - started, 1),
              "peak_rss_gib": round(usage.ru_maxrss * 1024 / 2**30, 2)}
    if killed["rss"]:
        record["killed"] = f"resident memory passed the {cap_bytes / 2**30:g} GiB cap ({killed['rss'] / 2**30:.1f} GiB)"
    return record


def _results(out: Path) -> dict:
    state = out / "trainer_state.json"
    if not state.is_file():
        return {}
    history = json.loads(state.read_text())["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    runtime = next((entry["train_runtime"] for entry in history if "train_runtime" in entry), None)
    return {"train_runtime_s": runtime, "first_loss": steps[0]["loss"] if steps else None,
            "last_loss": steps[-1]["loss"] if steps else None}


def bench_train(
    methods: tuple[str, ...] = DEFAULT_METHODS,
    batch: int = 4,
    seq_len: int = 1024,
    steps: int = 3,
    vocab: int = 151936,
    hidden: int = 256,
    layers: int = 2,
    memory_cap_gib: float = 16.0,
    workdir: str = "bench_train",
    out: str | None = None,
) -> list[dict]:
    """Run ``methods`` one after another in ``workdir``; one JSON line each (and to ``out``)."""
    from tqdm import tqdm

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UserError(f"unknown --methods {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    if min(batch, seq_len, steps, hidden, layers) < 1 or memory_cap_gib <= 0:
        raise UserError("--batch, --seq-len, --steps, --hidden, --layers must be >= 1 and --memory-cap-gib > 0.")
    from dft_mm.demo.tiny import build_tiny_text

    root = Path(workdir).resolve()
    model = root / f"model-v{vocab}-h{hidden}-l{layers}"
    if not (model / "config.json").is_file():
        build_tiny_text(model, hidden_size=hidden, num_layers=layers, vocab_size=vocab)
    data = root / f"data-{seq_len}"
    if not (data / "dataset_info.json").is_file():
        _write_data(data, max(batch * steps, 8), seq_len)
    env = {**os.environ, **OFFLINE, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("DFT_MM_DISABLE", None)
    shape = {"batch": batch, "seq_len": seq_len, "steps": steps, "vocab": vocab, "hidden": hidden, "layers": layers}
    records = []
    for name in tqdm(methods, desc="bench train", unit="run", file=sys.stderr):
        keys, upstream = METHODS[name]
        run_dir = root / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        config_path = run_dir / "train.yaml"
        config_path.write_text(yaml.safe_dump(_config(model, data, run_dir, keys, batch, seq_len, steps)))
        run_env = {**env, "DFT_MM_DISABLE": "1"} if upstream else env
        result = _run(config_path, run_env, int(memory_cap_gib * 2**30), run_dir / "train.log")
        record = {"method": name, **shape, "keys": keys, "upstream": upstream, **result, **_results(run_dir),
                  "log": str(run_dir / "train.log")}
        emit(record, out)
        records.append(record)
    print(summary(records, memory_cap_gib), file=sys.stderr)
    return records


def _ratio(value, base) -> str:
    return f"{value / base:.2f}x" if isinstance(value, (int, float)) and isinstance(base, (int, float)) and base else "—"


def summary(records: list[dict], memory_cap_gib: float) -> str:
    """A Markdown table of the records with ratios against dft_mm's DFT (LoRA: its LoRA DFT)."""
    by_name = {record["method"]: record for record in records}
    rows = []
    for record in records:
        base = by_name.get("lora_dft" if record["method"].startswith("lora") else BASELINE, {})
        failed = record.get("killed") or (f"exit code {record['returncode']}" if record["returncode"] else "")
        peak = f"> {memory_cap_gib:g} (killed)" if record.get("killed") else f"{record['peak_rss_gib']:.2f}"
        runtime = record.get("train_runtime_s")
        rows.append([
            record["method"], peak, "—" if failed else _ratio(record["peak_rss_gib"], base.get("peak_rss_gib")),
            "—" if runtime is None else f"{runtime:.1f}", _ratio(runtime, base.get("train_runtime_s")),
            f"{record['wall_s']:.1f}", failed or "ok",
        ])
    header = ["method", "peak RSS (GiB)", "peak / DFT", "train_runtime (s)", "runtime / DFT", "process wall (s)", "outcome"]
    return md_table(header, rows)


def register(verbs) -> None:
    """Add ``train`` to ``dft-mm bench``'s verbs."""
    parser = verbs.add_parser(
        "train",
        help="whole llamafactory-cli train runs per objective: dft_mm's vs LLaMA-Factory's own",
        description="One JSON line per method: peak resident memory, the trainer's train_runtime and the process's "
        "wall time of a few steps of a tiny Qwen2 at a real vocabulary size; each method alone, in its own process.",
    )
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (default: all but lora_*)")
    parser.add_argument("--batch", type=int, default=4, help="rows per step (default 4)")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per row (cutoff_len; default 1024)")
    parser.add_argument("--steps", type=int, default=3, help="training steps (default 3)")
    parser.add_argument("--vocab", type=int, default=151936, help="the model's vocabulary size (default Qwen's 151936)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (default 256)")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    parser.add_argument("--memory-cap-gib", type=float, default=16.0,
                        help="stop a run whose resident memory passes this (default 16)")
    parser.add_argument("--workdir", default="bench_train", help="model, data and run folders (default bench_train)")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")

    def handler(args) -> int:
        records = bench_train(
            methods=tuple(args.methods.split(",")), batch=args.batch, seq_len=args.seq_len, steps=args.steps,
            vocab=args.vocab, hidden=args.hidden, layers=args.layers, memory_cap_gib=args.memory_cap_gib,
            workdir=args.workdir, out=args.out,
        )
        return 1 if any(record["returncode"] and not record.get("killed") for record in records) else 0

    parser.set_defaults(handler=handler)
