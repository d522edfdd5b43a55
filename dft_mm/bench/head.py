"""``dft-mm bench head``: time, peak memory and gradient error of LM-head + DFT loss methods.

Each method runs in its own process (:mod:`dft_mm.bench.head_worker`) so that peak memory is
measured separately; one JSON line per method (and chunk size) goes to stdout and, with
``out``, to a JSONL file (methods that cannot run here get a line with ``"skipped": reason``
without starting a process, a crashed one ``"error"``).

Example::

    dft-mm bench head --tokens 4096 --hidden 256 --vocab 32000 --dtype float32
    dft-mm bench head --device cuda --dtype bfloat16 --tokens 16384 --hidden 3584 --vocab 152064
    dft-mm bench head --device cuda ... --methods triton,chunked_torch --chunk-sizes 128,256,512
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from dft_mm.errors import UserError
from dft_mm.loss_spec import LEVELS



def bench_head(
    tokens: int = 4096,
    hidden: int = 256,
    vocab: int = 32000,
    dtype: str = "float32",
    level: str = "token",
    alpha: float = 1.0,
    device: str = "auto",
    repeats: int = 3,
    seqs: int = 4,
    chunk_size: int | None = None,
    methods: tuple[str, ...] | None = None,
    reference: bool = True,
    chunk_sizes: tuple[int, ...] | None = None,
    out: str | None = None,
    fp32_logits: bool = False,
) -> list[dict]:
    """Benchmark ``methods`` (default: all of :data:`head_worker.METHODS`) and print one JSON
    line each; returns the records. ``chunk_sizes`` runs every method once per chunk size (a
    sweep; ``chunk_size`` otherwise); ``out`` also writes the lines to that JSONL file;
    ``fp32_logits`` runs the fused methods with fp32 logits (see :func:`dft_mm.fused.linear_dft`).
    ``device="auto"`` is ``cuda`` when available, else ``cpu``."""
    from dft_mm.bench.head_worker import METHODS, BenchConfig, device_name, unavailable

    methods = tuple(methods or METHODS)
    sizes = tuple(chunk_sizes) if chunk_sizes else (chunk_size,)
    for size in sizes:
        _check(tokens, hidden, vocab, seqs, repeats, size, alpha, level, methods, METHODS)
    device = resolve_device(device)
    runs = [(method, size) for size in sizes for method in methods]
    configs = [
        BenchConfig(
            method=method, tokens=tokens, hidden=hidden, vocab=vocab, dtype=dtype, level=level, alpha=alpha,
            device=device, repeats=repeats, seqs=seqs, chunk_size=size, reference=reference, fp32_logits=fp32_logits,
        )
        for method, size in runs
    ]
    return run_all("dft_mm.bench.head_worker", configs, unavailable, device_name(device), out, "bench head")


def run_all(worker: str, configs: list, unavailable, device_name: str, out: str | None, desc: str) -> list[dict]:
    """Each config in its own ``python -m worker`` process (a ``skipped`` record, without a process,
    where ``unavailable(cfg)`` gives a reason); one JSON line each via :func:`emit`."""
    from tqdm import tqdm

    records = []
    for cfg in tqdm(configs, desc=desc, unit="run", file=sys.stderr):
        reason = unavailable(cfg)
        record = {**asdict(cfg), "device_name": device_name, "skipped": reason} if reason else run_worker(worker, asdict(cfg))
        emit(record, out)
        records.append(record)
    return records


def emit(record: dict, out: str | None) -> None:
    """Print ``record`` as a JSON line, and append it to ``out`` when given."""
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        with Path(out).open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _check(tokens, hidden, vocab, seqs, repeats, chunk_size, alpha, level, methods, known) -> None:
    for name, value in (("--tokens", tokens), ("--hidden", hidden), ("--vocab", vocab), ("--seqs", seqs)):
        if value < 1:
            raise UserError(f"{name} must be >= 1; got {value}.")
    if tokens % seqs:
        raise UserError(f"--tokens {tokens} must be a multiple of --seqs {seqs} (tokens are split into equal rows).")
    if repeats < 0 or (chunk_size is not None and chunk_size < 1):
        raise UserError("--repeats must be >= 0 and --chunk-size >= 1.")
    if alpha < 0 or level not in LEVELS:
        raise UserError(f"--alpha must be >= 0 and --level one of {', '.join(LEVELS)}.")
    unknown = sorted(set(methods) - set(known))
    if unknown:
        raise UserError(f"unknown --methods {', '.join(unknown)}; choose from {', '.join(known)}.")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is visible here; use --device cpu.")
    return device


def run_worker(module: str, config: dict) -> dict:
    """Run ``python -m module '<config json>'`` and return its last JSON line (or an error record)."""
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(config)], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = proc.stderr.strip().splitlines()[-3:]
    return {**config, "error": f"worker exited {proc.returncode}: " + " | ".join(tail)}
