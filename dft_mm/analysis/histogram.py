"""Streaming statistics of target-token probabilities (bounded memory, any number of tokens).

:class:`TokenProbHistogram` takes batches of log-probabilities and their token ids, keeps

* counts over ``bins`` equal-width probability bins on ``[0, 1]`` (the paper's figure),
* counts over a fine grid of ``FINE_BINS`` bins, from which the quantiles are read
  (the quantile error is at most ``1 / FINE_BINS``),
* the sums of probabilities and log-probabilities (exact means; ``-mean_log_prob`` is the
  NLL that training logs) and the number of tokens,
* a counter of the token ids that fall in the lowest bin.

Memory is ``O(FINE_BINS + distinct low-bin tokens)``, independent of the data size.

Example::

    >>> import torch
    >>> h = TokenProbHistogram(bins=10)
    >>> h.add(torch.tensor([0.05, 0.5, 0.95]).log(), torch.tensor([7, 8, 9]))
    >>> s = h.summary()
    >>> s["counts"][0], s["share_below_0.1"], s["lowest_bin_tokens"]
    (1, 0.3333333333333333, {7: 1})
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

FINE_BINS = 10_000
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
LOW, HIGH = 0.1, 0.9


def _bin_index(probs: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin of each probability in ``bins`` equal-width bins; ``p == 1`` goes to the last bin."""
    return (probs * bins).floor().long().clamp_(0, bins - 1)


class TokenProbHistogram:
    """Accumulates log-probabilities ``[N]`` (``<= 0``) with their token ids ``[N]``."""

    def __init__(self, bins: int = 10):
        if bins < 2 or FINE_BINS % bins:
            raise ValueError(f"bins must be >= 2 and divide {FINE_BINS}; got {bins}")
        self.bins = bins
        self.fine = torch.zeros(FINE_BINS, dtype=torch.long)
        self.total = 0
        self.prob_sum = 0.0
        self.logprob_sum = 0.0
        self.below = 0
        self.above = 0
        self.lowest_tokens: Counter[int] = Counter()

    def add(self, log_probs: torch.Tensor, token_ids: torch.Tensor) -> None:
        """Add one batch: ``log_probs`` ``[N]`` and ``token_ids`` ``[N]`` (any device)."""
        log_probs = log_probs.detach().double().cpu().flatten()
        token_ids = token_ids.detach().cpu().flatten()
        if log_probs.numel() != token_ids.numel():
            raise ValueError(f"log_probs has {log_probs.numel()} entries but token_ids has {token_ids.numel()}")
        if log_probs.numel() == 0:
            return
        if not torch.isfinite(log_probs).all() or log_probs.max() > 1e-6:
            raise ValueError("log-probabilities must be finite and <= 0 (NaN/inf logits?)")
        probs = log_probs.exp().clamp_(max=1.0)
        self.logprob_sum += float(log_probs.sum())
        self.fine += torch.bincount(_bin_index(probs, FINE_BINS), minlength=FINE_BINS)
        self.total += probs.numel()
        self.prob_sum += float(probs.sum())
        self.below += int((probs < LOW).sum())
        self.above += int((probs > HIGH).sum())
        low = token_ids[_bin_index(probs, self.bins) == 0]
        self.lowest_tokens.update(low.tolist())

    def _quantile(self, q: float) -> float:
        """Upper edge of the fine bin holding the ``q``-quantile (error <= 1 / FINE_BINS)."""
        cumulative = np.cumsum(self.fine.numpy())
        index = int(np.searchsorted(cumulative, q * self.total, side="left"))
        return min(index + 1, FINE_BINS) / FINE_BINS

    def summary(self) -> dict:
        """JSON-ready statistics; the empty histogram gives ``None`` for mean and quantiles."""
        counts = self.fine.view(self.bins, FINE_BINS // self.bins).sum(dim=1).tolist()
        empty = self.total == 0
        return {
            "num_tokens": self.total,
            "bin_edges": [round(i / self.bins, 10) for i in range(self.bins + 1)],
            "counts": counts,
            "mean": None if empty else self.prob_sum / self.total,
            "mean_log_prob": None if empty else self.logprob_sum / self.total,
            "quantiles": {str(q): (None if empty else self._quantile(q)) for q in QUANTILES},
            "share_below_0.1": None if empty else self.below / self.total,
            "share_above_0.9": None if empty else self.above / self.total,
            "lowest_bin_tokens": dict(self.lowest_tokens.most_common()),
        }
