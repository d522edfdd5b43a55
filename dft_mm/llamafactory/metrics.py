"""Training-window statistics (plain NLL, mean target probability) reduced across ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist

from dft_mm.losses import LossStats


class StatsWindow:
    """Accumulates :class:`LossStats` of the micro-batches since the last log.

    ``flush`` sums over the window and over all ranks, so ``nll`` and ``mean_target_prob``
    are token-weighted means over every supervised token trained on since the last log.
    Every rank must call ``flush`` at the same time (the Trainer logs on all ranks).
    """

    def __init__(self) -> None:
        self._sums: torch.Tensor | None = None  # [3]: nll_sum, prob_sum, num_tokens

    def add(self, stats: LossStats) -> None:
        batch = torch.stack([stats.nll_sum, stats.prob_sum, stats.num_tokens]).detach().float()
        self._sums = batch if self._sums is None else self._sums + batch

    def flush(self, device: torch.device) -> dict[str, float]:
        """Return ``{"nll", "mean_target_prob"}`` for the window (empty if nothing was seen)."""
        sums = self._sums if self._sums is not None else torch.zeros(3)
        sums = sums.to(device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        self._sums = None
        nll_sum, prob_sum, num_tokens = sums.tolist()
        if num_tokens == 0:
            return {}
        return {"nll": round(nll_sum / num_tokens, 6), "mean_target_prob": round(prob_sum / num_tokens, 6)}
