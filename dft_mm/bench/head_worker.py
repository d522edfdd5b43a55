"""One method of ``dft-mm bench head``, measured in a process of its own.

Run as ``python -m dft_mm.bench.head_worker '<json config>'``; prints one JSON line. A fresh
process per method keeps peak-memory numbers honest (CPU: peak RSS of the process; CUDA:
the allocator's peak), both measured relative to the memory held just before the first
forward + backward, i.e. with the inputs already allocated.

Methods (all compute the LM head ``hidden @ weight.T`` plus the loss, forward + backward):

* ``naive``: materialised logits, fp32 upcast, :func:`dft_mm.losses.dft_loss` (what
  LLaMA-Factory's ``use_dft_loss`` does).
* ``chunked_torch`` / ``triton``: :func:`dft_mm.fused.linear_dft` with that backend.
* ``liger_ce`` / ``liger_dft``: Liger's fused linear cross entropy, plain and with
  ``use_token_scaling=True`` (Liger's DFT; token level, alpha 1 only).
* ``gemms``: the three bare matmuls of a head (logits, grad of hidden, grad of weight), no
  loss: the time floor.

Gradient errors are relative L2 norms against a float64 run of the chunked torch path (which
the tests hold equal to ``dft_loss``); ``*_floor`` is the error of that reference merely
rounded to the benchmark dtype, the best any method returning that dtype can do.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass

import torch

from dft_mm.bench.measure import device_name, liger_unavailable, memory_now, memory_peak, reset_peak, sync, timed_repeats

METHODS = ("naive", "chunked_torch", "triton", "liger_ce", "liger_dft", "gemms")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BenchConfig:
    method: str
    tokens: int = 4096
    hidden: int = 256
    vocab: int = 32000
    dtype: str = "float32"
    level: str = "token"
    alpha: float = 1.0
    device: str = "cpu"
    repeats: int = 3
    seqs: int = 4
    chunk_size: int | None = None
    reference: bool = True
    seed: int = 0
    fp32_logits: bool = False  # fused methods: keep the logits GEMM's fp32 accumulator


def make_inputs(cfg: BenchConfig):
    """Deterministic ``hidden [seqs, tokens/seqs, H]``, ``weight [V, H]`` (leaves that need
    grad) and ``labels [seqs, tokens/seqs]``; logits have a standard deviation of about 2."""
    gen = torch.Generator().manual_seed(cfg.seed)
    seq_len = cfg.tokens // cfg.seqs
    hidden = torch.randn(cfg.seqs, seq_len, cfg.hidden, generator=gen)
    weight = torch.randn(cfg.vocab, cfg.hidden, generator=gen) * (2.0 / cfg.hidden**0.5)
    labels = torch.randint(0, cfg.vocab, (cfg.seqs, seq_len), generator=gen)
    dtype = DTYPES[cfg.dtype]
    hidden = hidden.to(cfg.device, dtype).requires_grad_()
    weight = weight.to(cfg.device, dtype).requires_grad_()
    return hidden, weight, labels.to(cfg.device)


def unavailable(cfg: BenchConfig) -> str | None:
    """Why ``cfg.method`` cannot run here, or None."""
    on_cuda = cfg.device.startswith("cuda")
    if cfg.method == "triton" and not (on_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        return "needs a CUDA device"
    if cfg.method.startswith("liger"):
        reason = liger_unavailable(on_cuda)
        if reason:
            return reason
        if cfg.method == "liger_dft" and (cfg.level != "token" or cfg.alpha != 1.0):
            return "Liger's token scaling is token-level DFT (alpha 1) only"
    return None


def reference_alpha(cfg: BenchConfig) -> float:
    """The loss a method computes: Liger's plain CE is DFT with alpha 0 (plain NLL)."""
    return 0.0 if cfg.method == "liger_ce" else cfg.alpha


def _liger_loss(hidden, weight, labels, token_scaling: bool):
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    from dft_mm.losses import shift_labels

    loss_fn = LigerFusedLinearCrossEntropyLoss(use_token_scaling=token_scaling)
    return loss_fn(weight, hidden.reshape(-1, hidden.shape[-1]), shift_labels(labels).reshape(-1))


def loss_of(cfg: BenchConfig, hidden, weight, labels) -> torch.Tensor:
    """Forward pass of ``cfg.method`` (not ``gemms``)."""
    from dft_mm.fused import linear_dft
    from dft_mm.losses import dft_loss

    if cfg.method == "naive":
        return dft_loss(hidden @ weight.T, labels, level=cfg.level, alpha=cfg.alpha)
    if cfg.method in ("chunked_torch", "triton"):
        backend = "torch" if cfg.method == "chunked_torch" else "triton"
        return linear_dft(
            hidden, weight, labels, level=cfg.level, alpha=cfg.alpha, backend=backend, chunk_size=cfg.chunk_size,
            fp32_logits=cfg.fp32_logits,
        )
    return _liger_loss(hidden, weight, labels, token_scaling=cfg.method == "liger_dft")


def step(cfg: BenchConfig, hidden, weight, labels) -> torch.Tensor | None:
    """One forward + backward; returns the loss (None for ``gemms``)."""
    if cfg.method == "gemms":
        with torch.no_grad():
            logits = hidden.reshape(-1, hidden.shape[-1]) @ weight.T
            logits @ weight
            logits.T @ hidden.reshape(-1, hidden.shape[-1])
        return None
    hidden.grad = weight.grad = None
    loss = loss_of(cfg, hidden, weight, labels)
    loss.backward()
    return loss.detach()


def _rel_err(value: torch.Tensor, ref: torch.Tensor) -> float | None:
    norm = float(ref.norm())
    return None if norm == 0 else float((value.double() - ref).norm()) / norm


def gradient_errors(cfg: BenchConfig, hidden, weight, labels, loss) -> dict:
    """Errors of ``hidden.grad`` / ``weight.grad`` / ``loss`` against the float64 reference."""
    from dft_mm.fused import linear_dft

    ref_h = hidden.detach().double().requires_grad_()
    ref_w = weight.detach().double().requires_grad_()
    ref_loss = linear_dft(ref_h, ref_w, labels, level=cfg.level, alpha=reference_alpha(cfg), backend="torch")
    ref_loss.backward()
    dtype = DTYPES[cfg.dtype]
    return {
        "loss_abs_err": abs(float(loss) - ref_loss.item()),
        "grad_rel_err_hidden": _rel_err(hidden.grad, ref_h.grad),
        "grad_rel_err_weight": _rel_err(weight.grad, ref_w.grad),
        "grad_floor_hidden": _rel_err(ref_h.grad.to(dtype), ref_h.grad),
        "grad_floor_weight": _rel_err(ref_w.grad.to(dtype), ref_w.grad),
    }


def measure(cfg: BenchConfig) -> dict:
    """Peak extra memory of the first step, median time of ``cfg.repeats`` more, errors.
    The caller checks :func:`unavailable` first."""
    record = {**asdict(cfg), "device_name": device_name(cfg.device)}
    hidden, weight, labels = make_inputs(cfg)
    sync(cfg.device)
    reset_peak(cfg.device)
    before = memory_now(cfg.device)
    loss = step(cfg, hidden, weight, labels)
    sync(cfg.device)
    record["peak_extra_mib"] = round((memory_peak(cfg.device) - before) / 2**20, 1)
    last, median_ms = timed_repeats(lambda: step(cfg, hidden, weight, labels), cfg.device, cfg.repeats)
    if median_ms is not None:
        loss, record["median_ms"] = last, median_ms
    if loss is not None:
        record["loss"] = float(loss)
        if cfg.reference:
            record.update(gradient_errors(cfg, hidden, weight, labels, loss))
    return record


def main(argv: list[str]) -> int:
    cfg = BenchConfig(**json.loads(argv[0]))
    print(json.dumps(measure(cfg)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
