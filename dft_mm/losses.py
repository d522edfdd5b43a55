"""The DFT loss family in plain PyTorch: the reference math, on any device.

Dynamic Fine-Tuning rescales each supervised token's negative log-likelihood by a
stop-gradient power of a probability:

    L = (1 / N) * sum_t  sg(w_t)^alpha * (-log p_t)

where ``p_t`` is the model's probability of target token ``t`` and the weight ``w_t`` is

* ``level="token"``    : ``p_t`` itself (the paper's DFT),
* ``level="sentence"`` : ``prod_{t' in s} p_t'`` for every token of sequence ``s``,
* ``level="geomean"``  : ``exp(mean_{t' in s} log p_t')`` for every token of sequence ``s``.

``alpha = 0`` makes every weight exactly 1, i.e. plain NLL (SFT); ``alpha = 1`` is DFT.
A "sequence" is one row of the batch, or, when ``segment_ids`` are given (packed rows), one
run of equal ids within a row: a packed row of several samples gets one weight per sample.

Nothing here knows about LLaMA-Factory or the Trainer; the fused head in
:mod:`dft_mm.fused` reuses :func:`dft_weights` and :func:`reduce_weighted_nll`.

Example::

    >>> import torch
    >>> logits = torch.randn(2, 5, 11, requires_grad=True)
    >>> labels = torch.tensor([[-100, 3, 4, -100, 7], [-100, -100, 1, 2, 9]])
    >>> loss = dft_loss(logits, labels, level="token", alpha=1.0)
    >>> loss.backward()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F

LEVELS = ("token", "sentence", "geomean")

NumItems = Union[int, torch.Tensor, None]


class NonFiniteLogitsError(FloatingPointError):
    """Raised when supervised target log-probabilities are NaN or infinite.

    ``count`` is the number of affected supervised tokens; callers that know the training
    step (the LLaMA-Factory patch) re-raise with ``where="training step N"``.
    """

    def __init__(self, count: int, total: int, where: str = ""):
        self.count = count
        self.total = total
        super().__init__(
            (f"{where}: " if where else "") + f"{count} of {total} supervised tokens have a non-finite log-probability "
            "(NaN/inf logits). Lower the learning rate, enable gradient clipping, or check the "
            "data for empty or corrupted samples."
        )


@dataclass
class LossStats:
    """Detached per-batch statistics over the supervised tokens of one micro-batch.

    Sums, not means, so they can be added across micro-batches and ranks before dividing
    by ``num_tokens``.
    """

    nll_sum: torch.Tensor  # scalar fp32: sum of -log p_t
    prob_sum: torch.Tensor  # scalar fp32: sum of p_t
    num_tokens: torch.Tensor  # scalar fp32: number of supervised tokens

    @property
    def nll(self) -> float:
        return float(self.nll_sum / self.num_tokens.clamp_min(1))

    @property
    def mean_target_prob(self) -> float:
        return float(self.prob_sum / self.num_tokens.clamp_min(1))


def check_level_alpha(level: str, alpha: float) -> None:
    """Validate the two knobs shared by every implementation of the loss."""
    if level not in LEVELS:
        raise ValueError(f"dft level must be one of {', '.join(LEVELS)}; got {level!r}.")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha >= 0:
        raise ValueError(f"dft alpha must be a number >= 0 (0 = SFT, 1 = DFT); got {alpha!r}.")


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """HF causal-LM shift: position ``t`` predicts ``labels[t + 1]``.

    ``labels`` ``[B, T]`` -> ``[B, T]`` whose last column is ``ignore_index``, so logits
    ``[B, T, V]`` need no slicing (no copy of the logits is made). Segment ids are shifted
    the same way, so each position carries the id of the token it predicts.
    """
    return F.pad(labels[:, 1:], (0, 1), value=ignore_index)


def needs_sequences(level: str, alpha: float) -> bool:
    """Whether the weights depend on whole sequences (so packed rows need segment ids)."""
    return level != "token" and alpha != 0


def check_segment_ids(segment_ids: torch.Tensor | None, labels: torch.Tensor) -> None:
    """``segment_ids`` must be ``[B, T]`` integers in ``[0, T]`` like the labels."""
    if segment_ids is None:
        return
    if segment_ids.shape != labels.shape or segment_ids.is_floating_point():
        raise ValueError(
            f"segment_ids must be integer [B, T] = {tuple(labels.shape)}; got {segment_ids.dtype} {tuple(segment_ids.shape)}."
        )
    if segment_ids.numel() and (int(segment_ids.min()) < 0 or int(segment_ids.max()) > labels.shape[1]):
        raise ValueError(f"segment_ids must lie in [0, T={labels.shape[1]}] (e.g. a cumulative count of sample starts).")


def _per_sequence(values: torch.Tensor, segments: torch.Tensor | None) -> torch.Tensor:
    """For every position, the sum of ``values`` ``[B, T]`` over its sequence: the whole row,
    or the positions of the row sharing its segment id (ids in ``[0, T]``)."""
    if segments is None:
        return values.sum(dim=-1, keepdim=True).expand_as(values)
    sums = values.new_zeros(values.shape[0], values.shape[1] + 1).scatter_add_(1, segments, values)
    return sums.gather(1, segments)


def dft_weights(
    token_logprobs: torch.Tensor, mask: torch.Tensor, level: str, alpha: float, segments: torch.Tensor | None = None
) -> torch.Tensor:
    """Detached DFT weights ``sg(w)^alpha`` for every position.

    Args:
        token_logprobs: ``[B, T]`` fp32 log-probabilities of the targets (any value where
            ``mask`` is False).
        mask: ``[B, T]`` bool, True on supervised positions.
        level: ``"token" | "sentence" | "geomean"``.
        alpha: exponent ``>= 0``.
        segments: optional ``[B, T]`` int64 *shifted* segment ids (the id of the token each
            position predicts), for packed rows; ``None`` means one sequence per row.

    Returns:
        ``[B, T]`` fp32 weights, 0 where ``mask`` is False. Exactly 1 on supervised
        positions when ``alpha == 0``.
    """
    if alpha == 0:
        return mask.float()
    logp = token_logprobs.detach().float().masked_fill(~mask, 0.0)
    if level == "token":
        log_w = logp
    else:
        log_w = _per_sequence(logp, segments)
        if level == "geomean":
            log_w = log_w / _per_sequence(mask.float(), segments).clamp_min(1)
    return torch.exp(alpha * log_w) * mask


def normaliser(mask: torch.Tensor, num_items_in_batch: NumItems) -> torch.Tensor:
    """The loss denominator ``N`` as an fp32 scalar on ``mask``'s device (at least 1).

    ``num_items_in_batch`` is the HF Trainer's global supervised-token count (all
    accumulation steps and ranks); without it ``N`` is this batch's count.
    """
    if num_items_in_batch is None:
        n = mask.sum()
    else:
        n = torch.as_tensor(num_items_in_batch, device=mask.device)
    return n.float().clamp_min(1)


def reduce_weighted_nll(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    num_items_in_batch: NumItems,
) -> tuple[torch.Tensor, LossStats]:
    """``sum(w * -logp) / N`` plus detached statistics.

    Args:
        token_logprobs: ``[B, T]`` fp32 target log-probabilities, differentiable.
        mask: ``[B, T]`` bool supervised positions.
        weights: ``[B, T]`` detached weights from :func:`dft_weights`.
        num_items_in_batch: see :func:`normaliser`.

    Returns:
        ``(loss, stats)``: a scalar that stays connected to the graph even when no token is
        supervised (it is then exactly 0), and :class:`LossStats`.
    """
    supervised_logp = token_logprobs.masked_fill(~mask, 0.0)
    detached = supervised_logp.detach()
    if mask.any() and not torch.isfinite(detached).all():
        bad = int((~torch.isfinite(detached)).sum())
        raise NonFiniteLogitsError(bad, int(mask.sum()))
    loss = -(weights * supervised_logp).sum() / normaliser(mask, num_items_in_batch)
    stats = LossStats(
        nll_sum=-detached.sum(),
        prob_sum=(torch.exp(detached) * mask).sum(),
        num_tokens=mask.sum().float(),
    )
    return loss, stats


def check_label_range(labels: torch.Tensor, mask: torch.Tensor, vocab: int) -> None:
    """Raise a ``ValueError`` naming the first supervised label outside ``[0, vocab)``."""
    bad = mask & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        flat = int(bad.flatten().nonzero()[0])
        raise ValueError(
            f"label id {int(labels.flatten()[flat])} (flattened position {flat}) is outside the model's vocabulary "
            f"[0, {vocab}); the tokenizer and the model's embeddings disagree (resize the token embeddings) or the "
            "labels use an ignore index other than -100."
        )


# Rows per chunk when log-probabilities are computed without autograd (evaluation): the fp32
# copy of the logits then never exceeds this many rows.
NO_GRAD_ROWS = 1024


def target_logprobs(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 log-probabilities of the (already shifted) targets.

    Args:
        logits: ``[B, T, V]`` any float dtype.
        labels: ``[B, T]`` shifted targets, ``ignore_index`` where unsupervised.

    Returns:
        ``(token_logprobs [B, T] fp32 (fp64 for fp64 logits), mask [B, T] bool)``. Without
        autograd (evaluation) the upcast happens :data:`NO_GRAD_ROWS` rows at a time.
    """
    mask = labels != ignore_index
    check_label_range(labels, mask, logits.shape[-1])
    dtype = torch.promote_types(logits.dtype, torch.float32)
    flat_logits, flat_labels = logits.flatten(0, 1), labels.flatten()
    step = NO_GRAD_ROWS if not (torch.is_grad_enabled() and logits.requires_grad) else max(flat_labels.numel(), 1)
    nll = torch.cat([
        F.cross_entropy(flat_logits[i:i + step].to(dtype), flat_labels[i:i + step], ignore_index=ignore_index, reduction="none")
        for i in range(0, max(flat_labels.numel(), 1), step)
    ])
    return -nll.view_as(labels), mask


def dft_loss_and_stats(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    level: str = "token",
    alpha: float = 1.0,
    num_items_in_batch: NumItems = None,
    ignore_index: int = -100,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """:func:`dft_loss` that also returns :class:`LossStats` (plain NLL, mean p_t)."""
    check_level_alpha(level, alpha)
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [B, T].")
    check_segment_ids(segment_ids, labels)
    logp, mask = target_logprobs(logits, shift_labels(labels, ignore_index), ignore_index)
    segments = None if segment_ids is None else shift_labels(segment_ids.to(logp.device).long(), 0)
    return reduce_weighted_nll(logp, mask, dft_weights(logp, mask, level, alpha, segments), num_items_in_batch)


def dft_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    level: str = "token",
    alpha: float = 1.0,
    num_items_in_batch: NumItems = None,
    ignore_index: int = -100,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """DFT loss of a causal LM.

    Args:
        logits: ``[B, T, V]`` unshifted, any float dtype (math is done in fp32).
        labels: ``[B, T]`` unshifted (position ``t`` predicts ``labels[t + 1]``),
            ``ignore_index`` on unsupervised positions.
        level: ``"token"`` (DFT), ``"sentence"`` or ``"geomean"``.
        alpha: weight exponent; 0 is plain NLL, 1 is DFT.
        num_items_in_batch: global number of supervised tokens (HF Trainer); defaults to
            this batch's count.
        ignore_index: label value of unsupervised positions.
        segment_ids: optional ``[B, T]`` sample ids of packed rows (unshifted, aligned with
            ``labels``; e.g. the cumulative count of sample starts): ``sentence`` and
            ``geomean`` then weight each sample of a row separately.

    Returns:
        Scalar fp32 loss ``sum_t sg(w_t)^alpha * (-log p_t) / N``.
    """
    return dft_loss_and_stats(
        logits, labels, level=level, alpha=alpha, num_items_in_batch=num_items_in_batch, ignore_index=ignore_index,
        segment_ids=segment_ids,
    )[0]
