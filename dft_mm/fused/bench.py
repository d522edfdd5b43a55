"""``dft-mm bench head``: time, peak memory and gradient error of LM-head + DFT loss methods.

Each method runs in its own process (:mod:`dft_mm.fused.bench_worker`) so that peak memory is
measured separately; one JSON line per method goes to stdout (methods that cannot run here
get a line with ``"skipped": reason`` without starting a process, a crashed one ``"error"``).

Example::

    dft-mm bench head --tokens 4096 --hidden 256 --vocab 32000 --dtype float32
    dft-mm bench head --device cuda --dtype bfloat16 --tokens 16384 --hidden 3584 --vocab 152064
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

from dft_mm.errors import UserError

LEVELS = ("token", "sentence", "geomean")


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
) -> list[dict]:
    """Benchmark ``methods`` (default: all of :data:`bench_worker.METHODS`) and print one JSON
    line each; returns the records. ``device="auto"`` is ``cuda`` when available, else ``cpu``."""
    from tqdm import tqdm

    from dft_mm.fused.bench_worker import METHODS, BenchConfig, device_name, unavailable

    methods = tuple(methods or METHODS)
    _check(tokens, hidden, vocab, seqs, repeats, chunk_size, alpha, level, methods, METHODS)
    device = _resolve_device(device)
    records = []
    for method in tqdm(methods, desc="bench head", unit="method", file=sys.stderr):
        cfg = BenchConfig(
            method=method, tokens=tokens, hidden=hidden, vocab=vocab, dtype=dtype, level=level, alpha=alpha,
            device=device, repeats=repeats, seqs=seqs, chunk_size=chunk_size, reference=reference,
        )
        reason = unavailable(cfg)
        if reason:
            record = {**asdict(cfg), "device_name": device_name(device), "skipped": reason}
        else:
            record = _run_worker(asdict(cfg))
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


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


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is visible here; use --device cpu.")
    return device


def _run_worker(config: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "dft_mm.fused.bench_worker", json.dumps(config)], capture_output=True, text=True
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = proc.stderr.strip().splitlines()[-3:]
    return {**config, "error": f"worker exited {proc.returncode}: " + " | ".join(tail)}


def _handle(args) -> int:
    methods = tuple(args.methods.split(",")) if args.methods else None
    records = bench_head(
        tokens=args.tokens, hidden=args.hidden, vocab=args.vocab, dtype=args.dtype, level=args.level,
        alpha=args.alpha, device=args.device, repeats=args.repeats, seqs=args.seqs, chunk_size=args.chunk_size,
        methods=methods, reference=not args.no_reference,
    )
    return 1 if any("error" in record for record in records) else 0


def register(subparsers) -> None:
    """Add ``bench`` with its ``head`` verb to the top-level ``subparsers``."""
    bench = subparsers.add_parser("bench", help="benchmarks")
    verbs = bench.add_subparsers(dest="bench_command", required=True, metavar="VERB")
    head = verbs.add_parser(
        "head",
        help="LM head + DFT loss: naive fp32 logits vs chunked torch vs Triton vs Liger",
        description="One JSON line per method: median ms (fwd+bwd), peak extra memory (MiB), gradient "
        "relative error vs a float64 reference. Each method runs in its own process.",
    )
    head.add_argument("--tokens", type=int, default=4096, help="tokens in the batch (default 4096)")
    head.add_argument("--hidden", type=int, default=256, help="hidden size H (default 256)")
    head.add_argument("--vocab", type=int, default=32000, help="vocabulary size V (default 32000)")
    head.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    head.add_argument("--level", choices=LEVELS, default="token")
    head.add_argument("--alpha", type=float, default=1.0, help="DFT weight exponent (0 = SFT, 1 = DFT)")
    head.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    head.add_argument("--repeats", type=int, default=3, help="timed steps after the first (default 3)")
    head.add_argument("--seqs", type=int, default=4, help="rows the tokens are split into (default 4)")
    head.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk of the fused paths (default auto)")
    head.add_argument("--methods", default=None, help="comma-separated subset (default all)")
    head.add_argument("--no-reference", action="store_true", help="skip the float64 gradient reference")
    head.set_defaults(handler=_handle)
