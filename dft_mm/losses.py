"""The SFT objectives of :mod:`dft_mm.loss_spec` in plain PyTorch: the reference math, on any device.

Dynamic Fine-Tuning rescales each supervised token's negative log-likelihood by a
stop-gradient power of a probability:

    L = (1 / N) * sum_t  max(sg(w_t)^alpha, min_weight) * (-log p_t)

where ``p_t`` is the model's probability of target token ``t`` and the weight ``w_t`` is

* ``level="token"``    : ``p_t`` itself (the paper's DFT),
* ``level="sentence"`` : ``prod_{t' in s} p_t'`` for every token of sequence ``s``,
* ``level="geomean"``  : ``exp(mean_{t' in s} log p_t')`` for every token of sequence ``s``.

``alpha = 0`` makes every weight exactly 1, i.e. plain NLL (SFT); ``alpha = 1`` is DFT.
A "sequence" is one row of the batch, or, when ``segment_ids`` are given (packed rows), one
run of equal ids within a row: a packed row of several samples gets one weight per sample.
ASFT adds ``kl_coef * KL(pi_ref || pi_theta)`` per supervised position (``ref_logits``); EAFT
weighs the NLL by the entropy of the top-20 softmax (see :class:`~dft_mm.loss_spec.LossSpec`).

Nothing here knows about LLaMA-Factory or the Trainer; the fused head in
:mod:`dft_mm.fused` reuses :func:`dft_weights`, :func:`topk_entropy_weight` and
:func:`reduce_loss`.

Example::

    >>> import torch
    >>> logits = torch.randn(2, 5, 11, requires_grad=True)
    >>> labels = torch.tensor([[-100, 3, 4, -100, 7], [-100, -100, 1, 2, 9]])
    >>> loss = dft_loss(logits, labels, level="token", alpha=1.0)
    >>> loss.backward()
    >>> ref = torch.randn(2, 5, 11)
    >>> loss, stats = sft_loss_and_stats(logits, labels, LossSpec.asft(kl_coef=0.1), ref_logits=ref)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F

from dft_mm.loss_spec import EAFT_ENTROPY_SCALE, EAFT_TOP_K, LEVELS, LossSpec

__all__ = ["LEVELS", "LossSpec", "LossStats", "NonFiniteLogitsError", "dft_loss", "dft_loss_and_stats", "sft_loss",
           "sft_loss_and_stats"]

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

    Sums and counts, not means, so they can be added across micro-batches and ranks before
    dividing: ``nll``, ``mean_target_prob``, ``entropy`` and ``kl`` by ``num_tokens``, the
    weight underflow by ``num_seqs``. All are fp32 scalars; ``kl_sum`` is 0 without a reference
    and the sequence counts are 0 unless the weights are sequence-level.
    """

    nll_sum: torch.Tensor  # sum of -log p_t
    prob_sum: torch.Tensor  # sum of p_t
    num_tokens: torch.Tensor  # number of supervised tokens
    entropy_sum: torch.Tensor  # sum of the predictive entropy H(p(.|t)) over the whole vocabulary
    kl_sum: torch.Tensor  # sum of KL(pi_ref || pi_theta) per supervised position (ASFT)
    zero_weight_seqs: torch.Tensor  # sequences whose sequence-level weight sg(w)^alpha is exactly 0
    num_seqs: torch.Tensor  # sequences with a supervised token (sequence-level weights only)

    def per_token(self, total: torch.Tensor) -> float:
        return float(total / self.num_tokens.clamp_min(1))

    nll = property(lambda self: self.per_token(self.nll_sum))
    mean_target_prob = property(lambda self: self.per_token(self.prob_sum))
    entropy = property(lambda self: self.per_token(self.entropy_sum))
    kl = property(lambda self: self.per_token(self.kl_sum))


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """HF causal-LM shift: position ``t`` predicts ``labels[t + 1]``.

    ``labels`` ``[B, T]`` -> ``[B, T]`` whose last column is ``ignore_index``, so logits
    ``[B, T, V]`` need no slicing (no copy of the logits is made). Segment ids are shifted
    the same way, so each position carries the id of the token it predicts.
    """
    return F.pad(labels[:, 1:], (0, 1), value=ignore_index)


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


def sequence_weights(
    token_logprobs: torch.Tensor, mask: torch.Tensor, level: str, alpha: float, segments: torch.Tensor | None = None
) -> torch.Tensor:
    """Detached weights ``sg(w)^alpha`` for every position, before any floor.

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


def apply_floor(weights: torch.Tensor, mask: torch.Tensor, min_weight: float) -> torch.Tensor:
    """``max(weights, min_weight)`` on supervised positions (0 elsewhere); ``weights`` as is when the floor is 0."""
    if not min_weight:
        return weights
    return torch.clamp_min(weights, min_weight) * mask


def dft_weights(
    token_logprobs: torch.Tensor, mask: torch.Tensor, level: str, alpha: float, segments: torch.Tensor | None = None,
    min_weight: float = 0.0,
) -> torch.Tensor:
    """:func:`sequence_weights` with the floor ``min_weight`` applied: ``max(sg(w)^alpha, min_weight)``."""
    return apply_floor(sequence_weights(token_logprobs, mask, level, alpha, segments), mask, min_weight)


def count_sequences(flags: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(flagged, total)`` fp32 counts of sequences (rows, or packed samples by ``segments``)
    with a supervised position, and of those with a flagged supervised position."""
    supervised = mask.float()
    hit = (flags & mask).float()
    if segments is None:
        return (hit.amax(dim=-1)).sum(), supervised.amax(dim=-1).sum()
    per_seq = lambda values: values.new_zeros(values.shape[0], values.shape[1] + 1).scatter_reduce_(  # noqa: E731
        1, segments, values, reduce="amax").sum()
    return per_seq(hit), per_seq(supervised)


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


def topk_entropy_weight(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """EAFT's weight ``(H_k / 3) ^ alpha`` per row of fp32 ``logits`` ``[C, V]`` -> ``[C]``.

    ``H_k`` is the entropy of the softmax renormalised over each row's ``k = 20`` largest
    logits (all of them when ``V < 20``), computed as LLaMA-Factory 0.9.5 computes it. No gradient.
    """
    with torch.no_grad():
        top = torch.topk(logits, k=min(EAFT_TOP_K, logits.shape[-1]), dim=-1).values
        log_probs = top - torch.logsumexp(top, dim=-1, keepdim=True)
        entropy = -(torch.exp(log_probs) * log_probs).sum(dim=-1)
        return torch.pow(entropy / EAFT_ENTROPY_SCALE, alpha)


def row_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Predictive entropy ``H(softmax(z))`` per row of fp32 ``logits`` ``[C, V]`` -> ``[C]`` (no gradient)."""
    with torch.no_grad():
        log_p = torch.log_softmax(logits, dim=-1)
        return -(torch.exp(log_p) * log_p).sum(dim=-1)


def row_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(ref) || softmax(z))`` per row ``[C, V]`` -> ``[C]``, differentiable in ``logits``.

    Written as ``sum q * (log q - log p)`` with both log-probabilities from ``log_softmax``, so
    it is exactly 0 where the two rows are equal.
    """
    log_q = torch.log_softmax(ref_logits.detach(), dim=-1)
    return (torch.exp(log_q) * (log_q - torch.log_softmax(logits, dim=-1))).sum(dim=-1)


def reduce_loss(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    num_items_in_batch: NumItems,
    *,
    entropy: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    sequences: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """``(sum(w * -logp) + kl_coef * sum(kl)) / N`` plus detached statistics.

    Args:
        token_logprobs: ``[B, T]`` fp32 target log-probabilities, differentiable.
        mask: ``[B, T]`` bool supervised positions.
        weights: ``[B, T]`` detached weights (:func:`dft_weights`, :func:`topk_entropy_weight`).
        num_items_in_batch: see :func:`normaliser`.
        entropy: ``[B, T]`` predictive entropy per position (any value off ``mask``).
        kl: optional ``[B, T]`` KL to the reference per position (differentiable; ASFT).
        kl_coef: its coefficient.
        sequences: ``(zero_weight_seqs, num_seqs)`` counts, for sequence-level weights.

    Returns:
        ``(loss, stats)``: a scalar that stays connected to the graph even when no token is
        supervised (it is then exactly 0), and :class:`LossStats`.
    """
    supervised_logp = token_logprobs.masked_fill(~mask, 0.0)
    detached = supervised_logp.detach()
    if mask.any() and not torch.isfinite(detached).all():
        bad = int((~torch.isfinite(detached)).sum())
        raise NonFiniteLogitsError(bad, int(mask.sum()))
    total = -(weights * supervised_logp).sum()
    zero = detached.new_zeros(())
    kl_sum = zero
    if kl is not None:
        supervised_kl = kl.masked_fill(~mask, 0.0)
        total = total + kl_coef * supervised_kl.sum()
        kl_sum = supervised_kl.detach().sum()
    zero_seqs, num_seqs = sequences if sequences is not None else (zero, zero)
    stats = LossStats(
        nll_sum=-detached.sum(),
        prob_sum=(torch.exp(detached) * mask).sum(),
        num_tokens=mask.sum().float(),
        entropy_sum=entropy.detach().float().masked_fill(~mask, 0.0).sum(),
        kl_sum=kl_sum,
        zero_weight_seqs=zero_seqs.float(),
        num_seqs=num_seqs.float(),
    )
    return total / normaliser(mask, num_items_in_batch), stats


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


def _row_chunks(count: int):
    for start in range(0, max(count, 1), NO_GRAD_ROWS):
        yield slice(start, start + NO_GRAD_ROWS)


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


def _supervised_rows(values: torch.Tensor, mask: torch.Tensor, compute) -> torch.Tensor:
    """``compute`` (fp32 rows ``[C, V]`` -> ``[C]``, no gradient) over the supervised rows of
    ``values`` ``[B, T, V]``, :data:`NO_GRAD_ROWS` at a time, scattered into ``[B, T]`` fp32."""
    index = mask.flatten().nonzero().squeeze(1)
    flat = values.detach().flatten(0, 1)
    out = torch.zeros(mask.numel(), dtype=torch.float32, device=values.device)
    for part in _row_chunks(index.numel()):
        rows = index[part]
        out[rows] = compute(flat[rows].float()).float()
    return out.view_as(mask)


def _reference_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` :func:`row_kl` at the supervised positions (0 elsewhere), differentiable in ``logits``."""
    if ref_logits.shape != logits.shape:
        raise ValueError(
            f"ref_logits {tuple(ref_logits.shape)} must have the policy logits' shape {tuple(logits.shape)}: "
            "the reference model must share the policy's vocabulary and see the same tokens."
        )
    index = mask.flatten().nonzero().squeeze(1)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    kl = row_kl(logits.flatten(0, 1)[index].to(dtype), ref_logits.flatten(0, 1)[index].to(dtype))
    return torch.zeros(mask.numel(), dtype=kl.dtype, device=logits.device).index_put((index,), kl).view_as(mask)


def sft_loss_and_stats(
    logits: torch.Tensor,
    labels: torch.Tensor,
    spec: LossSpec,
    *,
    ref_logits: torch.Tensor | None = None,
    num_items_in_batch: NumItems = None,
    ignore_index: int = -100,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """:func:`sft_loss` that also returns :class:`LossStats`."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [B, T].")
    if spec.needs_reference and ref_logits is None:
        raise ValueError(f"{spec.objective} needs ref_logits: the reference model's logits on the same batch.")
    check_segment_ids(segment_ids, labels)
    logp, mask = target_logprobs(logits, shift_labels(labels, ignore_index), ignore_index)
    segments = None if segment_ids is None else shift_labels(segment_ids.to(logp.device).long(), 0)
    sequences = None
    if spec.weights_from_entropy:
        weights = _supervised_rows(logits, mask, lambda rows: topk_entropy_weight(rows, spec.entropy_alpha))
    else:
        raw = sequence_weights(logp, mask, spec.level, spec.alpha, segments)
        weights = apply_floor(raw, mask, spec.min_weight)
        if spec.needs_sequences:
            sequences = count_sequences(raw == 0, mask, segments)
    kl = _reference_kl(logits, ref_logits, mask) if spec.needs_reference else None
    return reduce_loss(
        logp, mask, weights, num_items_in_batch, entropy=_supervised_rows(logits, mask, row_entropy), kl=kl,
        kl_coef=spec.kl_coef, sequences=sequences,
    )


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, spec: LossSpec, **kwargs) -> torch.Tensor:
    """The SFT objective ``spec`` of a causal LM (keyword arguments as :func:`sft_loss_and_stats`).

    Args:
        logits: ``[B, T, V]`` unshifted, any float dtype (math is done in fp32).
        labels: ``[B, T]`` unshifted (position ``t`` predicts ``labels[t + 1]``),
            ``ignore_index`` on unsupervised positions.
        spec: the objective (:class:`~dft_mm.loss_spec.LossSpec`).
        ref_logits: ``[B, T, V]`` the reference model's logits on the same batch (ASFT only).
        num_items_in_batch: global number of supervised tokens (HF Trainer); defaults to
            this batch's count.
        ignore_index: label value of unsupervised positions.
        segment_ids: optional ``[B, T]`` sample ids of packed rows (unshifted, aligned with
            ``labels``; e.g. the cumulative count of sample starts): ``sentence`` and
            ``geomean`` then weight each sample of a row separately.

    Returns:
        Scalar fp32 loss ``sum_t (w_t * (-log p_t) + kl_coef * KL_t) / N``.
    """
    return sft_loss_and_stats(logits, labels, spec, **kwargs)[0]


def dft_loss_and_stats(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    level: str = "token",
    alpha: float = 1.0,
    min_weight: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, LossStats]:
    """:func:`dft_loss` that also returns :class:`LossStats` (plain NLL, mean p_t, entropy)."""
    return sft_loss_and_stats(logits, labels, LossSpec.dft(level, alpha, min_weight), **kwargs)


def dft_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    level: str = "token",
    alpha: float = 1.0,
    min_weight: float = 0.0,
    **kwargs,
) -> torch.Tensor:
    """DFT loss of a causal LM: :func:`sft_loss` with ``LossSpec.dft(level, alpha, min_weight)``.

    ``level``: ``"token"`` (DFT), ``"sentence"`` or ``"geomean"``; ``alpha``: weight exponent
    (0 is plain NLL, 1 is DFT); ``min_weight``: floor of the weight in ``[0, 1]`` (0 = none).
    Other keyword arguments (``num_items_in_batch``, ``ignore_index``, ``segment_ids``) as in
    :func:`sft_loss`. Returns the scalar fp32 loss ``sum_t w_t * (-log p_t) / N``.
    """
    return dft_loss_and_stats(logits, labels, level=level, alpha=alpha, min_weight=min_weight, **kwargs)[0]
