"""Training-window statistics reduced across ranks: the metrics every dft_mm run logs.

* ``nll``: mean ``-log p_t`` over the supervised tokens (the quantity to compare across
  objectives: ``loss`` is what each run optimises);
* ``mean_target_prob``: mean ``p_t``;
* ``entropy``: mean predictive entropy ``H(p(.|t))`` over the whole vocabulary;
* ``kl`` (ASFT): mean ``KL(pi_ref || pi_theta)`` per supervised position;
* ``weight_underflow`` (sequence-level DFT weights): the share of sequences whose weight
  ``sg(w)^alpha`` is exactly 0 in fp32, i.e. that train with no gradient (above a floor:
  with ``dft_min_weight``).

All token metrics are token-weighted over every supervised token trained on since the last
log, on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from dft_mm.loss_spec import LossSpec
from dft_mm.losses import LossStats

TOKEN_METRICS = {"nll": "nll_sum", "mean_target_prob": "prob_sum", "entropy": "entropy_sum", "kl": "kl_sum"}
SUMS = ("nll_sum", "prob_sum", "num_tokens", "entropy_sum", "kl_sum", "zero_weight_seqs", "num_seqs")
METRICS = (*TOKEN_METRICS, "weight_underflow")  # every key a dft_mm run may add to a training log


def metric_names(spec: LossSpec) -> tuple[str, ...]:
    """The metrics a run with ``spec`` logs."""
    names = ["nll", "mean_target_prob", "entropy"]
    names += ["kl"] if spec.needs_reference else []
    names += ["weight_underflow"] if spec.needs_sequences else []
    return tuple(names)


class StatsWindow:
    """Accumulates :class:`LossStats` of the micro-batches since the last log.

    ``flush`` sums over the window and over all ranks and returns :func:`metric_names`'s
    metrics. Every rank must call ``flush`` at the same time (the Trainer logs on all ranks).
    """

    def __init__(self, spec: LossSpec) -> None:
        self.names = metric_names(spec)
        self._sums: torch.Tensor | None = None  # [len(SUMS)]

    def add(self, stats: LossStats) -> None:
        batch = torch.stack([getattr(stats, name).detach().float() for name in SUMS])
        self._sums = batch if self._sums is None else self._sums + batch.to(self._sums.device)

    def flush(self, device: torch.device) -> dict[str, float]:
        """The window's metrics (empty if no supervised token was seen)."""
        sums = self._sums if self._sums is not None else torch.zeros(len(SUMS))
        sums = sums.to(device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        self._sums = None
        total = dict(zip(SUMS, sums.tolist()))
        if total["num_tokens"] == 0:
            return {}
        logs = {name: total[TOKEN_METRICS[name]] / total["num_tokens"] for name in self.names if name in TOKEN_METRICS}
        if "weight_underflow" in self.names:
            logs["weight_underflow"] = total["zero_weight_seqs"] / max(total["num_seqs"], 1)
        return {name: float(f"{value:.7g}") for name, value in logs.items()}  # fp32's precision
