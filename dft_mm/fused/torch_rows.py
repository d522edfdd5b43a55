"""Per-chunk softmax work of the fused head in plain PyTorch (any device; the reference).

The logits of a chunk come from the GEMM in the GEMM dtype (bf16/fp16/fp32/fp64), exactly as
an ``nn.Linear`` would return them; the softmax, target log-probability, weight, entropy,
KL to the reference (ASFT) and logit gradient are then computed in fp32 (fp64 for fp64), as
:func:`dft_mm.losses.sft_loss` does on materialised logits, and the gradient is handed back in
the GEMM dtype.

Per chunk of ``C`` rows and ``V`` logits the work is: one logsumexp, one ``exp`` into a
second ``[C, V]`` buffer (the probabilities, overwritten by the gradient), row dot products
for the entropy; with a reference, the same for its logits plus one subtraction for the KL,
the reference's softmax overwriting its own logits (``ROW_BLOCK`` rows at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dft_mm.loss_spec import LossSpec
from dft_mm.losses import topk_entropy_weight


def _working_copy(z: torch.Tensor) -> torch.Tensor:
    """``z`` in fp32 (fp64 stays fp64); a new tensor when ``z`` is low precision."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum(a * b, -1)`` per row without a ``[C, V]`` temporary."""
    return torch.einsum("cv,cv->c", a, b)


def _log_softmax_and_probs_(z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Overwrite fp32 ``z`` ``[C, V]`` with ``log_softmax(z)`` and return ``softmax(z)`` (in
    ``out`` when given), with one ``exp`` pass (a logsumexp and then an ``exp`` of the
    log-probabilities take two)."""
    z.sub_(z.amax(dim=-1, keepdim=True))
    probs = torch.exp(z, out=out)
    total = probs.sum(dim=-1, keepdim=True)
    probs.div_(total)
    z.sub_(total.log())
    return probs


# Rows per softmax pass on ASFT's two sides: the reference's softmax then needs a [ROW_BLOCK, V]
# temporary, not a second [C, V] buffer beside its logits.
ROW_BLOCK = 16


def _row_blocks(rows: int) -> list[slice]:
    return [slice(start, start + ROW_BLOCK) for start in range(0, rows, ROW_BLOCK)]


def _policy_log_softmax_(z: torch.Tensor) -> torch.Tensor:
    """``_log_softmax_and_probs_`` of ``z`` ``[C, V]``, block by block as the reference's
    rows go (:func:`_reference_kl_`), so identical rows give identical bits on both sides."""
    probs = torch.empty_like(z)
    for block in _row_blocks(z.shape[0]):
        _log_softmax_and_probs_(z[block], out=probs[block])
    return probs


def _reference_kl_(ref: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """``KL(q || p)`` per row ``[C]`` of the reference's fp32 logits ``ref`` ``[C, V]`` against the
    policy's ``log p`` ``logp`` ``[C, V]``; ``ref`` is overwritten with ``q = softmax(ref)``."""
    kl = ref.new_empty(ref.shape[0])
    for block in _row_blocks(ref.shape[0]):
        q = _log_softmax_and_probs_(ref[block])  # ref[block] is now log q
        kl[block] = _rowdot(q, ref[block].sub_(logp[block]))  # sum q * (log q - log p)
        ref[block].copy_(q)
    return kl


def token_weight(logp: torch.Tensor, spec: LossSpec) -> torch.Tensor:
    """Token-level DFT weight ``max(p ** alpha, min_weight)`` from ``log p`` ``[C]`` (fp32), as
    :func:`dft_mm.losses.dft_weights` computes it."""
    weight = torch.exp(spec.alpha * logp) if spec.alpha else torch.ones_like(logp)
    return weight.clamp_min(spec.min_weight) if spec.min_weight else weight


@dataclass
class RowTerms:
    """Per-row results of one chunk, all ``[C]`` fp32: ``logp`` (target log-probability),
    ``entropy`` (predictive entropy), ``weight`` (the NLL weight, when the rows computed it:
    token-local objectives) and ``kl`` (to the reference, when there is one)."""

    logp: torch.Tensor
    entropy: torch.Tensor
    weight: torch.Tensor | None = None
    kl: torch.Tensor | None = None


class TorchRows:
    """Row operations on a chunk of logits ``z`` ``[C, V]`` with targets ``y`` ``[C]``."""

    name = "torch"

    @staticmethod
    def bytes_per_logit(gemm_dtype: torch.dtype) -> int:
        """Memory per logit of a chunk on one head: the GEMM output, its fp32 copy, the
        probabilities, a logsumexp temporary (a reference's head is budgeted the same again)."""
        return gemm_dtype.itemsize + 12

    @staticmethod
    def _logprobs_lse(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lse = torch.logsumexp(z, dim=-1)
        return z.gather(1, y[:, None]).squeeze(1) - lse, lse

    def target_logprobs(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p_y`` ``[C]`` fp32 of logits ``z`` ``[C, V]``."""
        return self._logprobs_lse(_working_copy(z), y)[0].float()

    def terms_and_grad_(self, z, y, spec: LossSpec, *, scale=None, inv_n=None, ref=None, want_grad=True):
        """:class:`RowTerms` of the chunk and ``d loss / d z`` (None unless ``want_grad``).

        ``d loss / d z = s * (softmax(z) - onehot(y)) + c * (softmax(z) - softmax(ref))`` with
        ``s`` the token's ``w / N`` and ``c = kl_coef / N``. ``scale`` ``[C]`` gives ``s``
        (sequence-level weights, known from a first pass); ``None`` means the weight comes
        from the row itself (token-level DFT, NLL, EAFT) times ``inv_n`` (0-dim: ``1 / N``
        times the head's gradient scale). ``ref`` ``[C, V]``: the reference's logits of the
        same rows (ASFT). ``z`` and ``ref`` may be overwritten. The gradient is in ``z``'s dtype.
        """
        work = _working_copy(z)
        weight = None
        if ref is None:
            logp, lse = self._logprobs_lse(work, y)
            if scale is None:
                weight = topk_entropy_weight(work, spec.entropy_alpha) if spec.weights_from_entropy else token_weight(logp, spec)
            work.sub_(lse[:, None])  # log p
            probs = work.exp()
        else:  # ASFT: both sides through one routine, so identical rows give a KL of exactly 0
            probs = _policy_log_softmax_(work)
            logp = work.gather(1, y[:, None]).squeeze(1)
            weight = token_weight(logp, spec) if scale is None else None
        terms = RowTerms(logp.float(), (-_rowdot(probs, work)).float(), None if weight is None else weight.float())
        ref_probs = None
        if ref is not None:
            ref_probs = _working_copy(ref)
            terms.kl = _reference_kl_(ref_probs, work).float()
        if not want_grad:
            return terms, None
        token_scale = (weight * inv_n if scale is None else scale).to(work.dtype)
        if ref_probs is not None:  # the KL part from p - q itself: no cancellation when the two are close
            kl_part = torch.sub(probs, ref_probs, out=ref_probs).mul_((spec.kl_coef * inv_n).to(work.dtype))
            probs.mul_(token_scale[:, None]).add_(kl_part)
        else:
            probs.mul_(token_scale[:, None])
        probs.scatter_add_(1, y[:, None], -token_scale[:, None])
        return terms, probs.to(z.dtype)
