"""The chunked fused linear + DFT head as one ``torch.autograd.Function``.

Shapes: ``N = B * T`` flattened positions, ``S`` supervised ones (label not ignored after
the shift), ``H`` hidden size, ``V`` vocabulary, ``C`` tokens per chunk.

Only the ``S`` supervised rows of the hidden states are ever multiplied by the head, ``C``
at a time, so at most one ``[C, V]`` chunk of logits exists. The gradients of hidden,
weight and bias are produced *during the forward pass* (the weights of every token are known
once its chunk's logits are), and ``backward`` only multiplies them by ``grad_output``.

Precision (the same rounding points as ``nn.Linear`` + :func:`dft_mm.losses.dft_loss`):

* the GEMMs run in the *GEMM dtype*: the autocast dtype under autocast, else the hidden
  states' dtype (an fp32 master weight is cast to it per call, as autocast does);
* the chunk's logits are the GEMM's output in the GEMM dtype, as ``nn.Linear`` returns them
  (``fp32_logits`` keeps the GEMM's fp32 accumulator instead: more accurate than the unfused
  path in bf16/fp16, so no longer equal to it);
* the softmax work is fp32 (:mod:`~dft_mm.fused.torch_rows`, :mod:`~dft_mm.fused.triton_rows`);
* the weight and bias gradients accumulate over chunks in fp32 (fp64 for fp64 inputs) and
  are rounded once to the GEMM dtype in ``backward``, as the single backward GEMM of
  ``nn.Linear`` rounds them (so an fp32 master weight under autocast gets the same gradient
  as on the unfused path, not a chunk-by-chunk low-precision running sum); the hidden
  gradient rows are GEMM outputs in the GEMM dtype, kept in fp32 until ``backward``;
* in fp16 the logit gradient ``(w / N) * (softmax - onehot)`` would underflow (it is far
  below fp16's normal range, which is why fp16 training scales the loss); it is computed
  times ``S``, the loss scaler's current scale when the caller passes it (``grad_scale``:
  then every fp16 rounding is the unfused path's), else a power of two ``S ~ 16 N`` (so its
  magnitude stays below 32), and ``backward`` multiplies by ``grad_output / S``.

Passes over the logits:

* token-local weights (``level="token"``, ``alpha == 0``, EAFT, ASFT): one pass (logits GEMM,
  softmax kernel, two gradient GEMMs), the same three GEMMs as the unfused head; ASFT adds
  the reference head's logits GEMM per chunk (four GEMMs), from the reference's last hidden
  states (:class:`~dft_mm.fused.reference.ReferenceHead`), and its softmax beside the policy's.
* ``level="sentence" | "geomean"`` with ``alpha > 0``: the weight of a token depends on the
  sum of log-probabilities over its whole sequence (a row, or one packed sample of it), so a
  first pass computes every target log-probability (one extra logits GEMM, nothing stored but
  ``S`` floats), then the second pass is the token-level pass with the now-known weights:
  four GEMMs instead of three, about 1.33x the token-level time, same memory.
* no gradient needed (evaluation): one logits pass, no gradient GEMMs.

A :class:`~dft_mm.fused.transforms.LogitTransform` (soft-capping, logit scaling) is replayed
on each chunk's logits with autograd, so its gradient is exactly the unfused one.

Every pass also yields, per supervised token, the predictive entropy (a statistic) and, with a
reference, the KL term; none of them needs more than the chunk's ``[C, V]`` buffers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields

import torch

from dft_mm.fused.chunking import auto_chunk_size, chunk_logits
from dft_mm.fused.reference import ReferenceHead
from dft_mm.fused.transforms import LogitTransform
from dft_mm.loss_spec import LossSpec
from dft_mm.losses import (
    NumItems,
    apply_floor,
    count_sequences,
    normaliser,
    reduce_loss,
    sequence_weights,
)

logger = logging.getLogger(__name__)

# fp16: the scaled logit gradient stays below 2**FP16_HEADROOM_BITS in magnitude.
FP16_HEADROOM_BITS = 5


@dataclass
class HeadConfig:
    """The non-tensor arguments of one call."""

    batch: int  # B
    seq_len: int  # T
    spec: LossSpec
    num_items_in_batch: NumItems
    chunk_size: int | None
    rows: object  # TorchRows | TritonRows
    grad_enabled: bool  # torch.is_grad_enabled() at the call (False under no_grad: evaluation)
    gemm_dtype: torch.dtype
    segments: torch.Tensor | None = None  # [B, T] shifted segment ids of packed rows
    transform: LogitTransform | None = None
    grad_scale: float | None = None  # fp16: the loss scaler's scale, if known
    fp32_logits: bool = False  # keep the logits GEMM's fp32 accumulator instead of rounding like nn.Linear
    reference: ReferenceHead | None = None  # ASFT: the frozen reference's hidden states and head


def accumulator_dtype(gemm_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if gemm_dtype == torch.float64 else torch.float32


def gradient_scale(gemm_dtype: torch.dtype, n_items: torch.Tensor, loss_scale: float | None) -> float:
    """The factor the logit gradient is computed with: 1 unless fp16; in fp16 the loss
    scaler's ``loss_scale`` when known, else a power of two near ``16 N``."""
    if gemm_dtype != torch.float16:
        return 1.0
    if loss_scale is not None:
        return float(loss_scale)
    return 2.0 ** (math.ceil(math.log2(float(n_items))) + FP16_HEADROOM_BITS - 1)


_MIXED_ADDMM = {"cuda": True}  # whether torch.addmm(..., out_dtype=fp32) works on this device type


def accumulate_mm_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` with ``acc`` in fp32/fp64 and ``a``, ``b`` in the GEMM dtype.

    CUDA multiplies bf16/fp16 operands with fp32 accumulation straight into ``acc``
    (``addmm`` with ``out_dtype``); elsewhere the operands are upcast (exact products).
    """
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
        return
    if acc.is_cuda and _MIXED_ADDMM["cuda"]:
        try:
            torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
            return
        except (RuntimeError, TypeError) as err:
            _MIXED_ADDMM["cuda"] = False
            logger.warning("dft_mm fused head: mixed-dtype addmm unavailable (%s); upcasting its operands", err)
    acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


class _Gradients:
    """Accumulators for ``grad_hidden [N, H]``, ``grad_weight [V, H]``, ``grad_bias [V]`` in
    the accumulator dtype; ``None`` for inputs that need no gradient."""

    def __init__(self, hidden, weight, needs, dtype):
        device = hidden.device
        self.hidden = torch.zeros(hidden.shape, dtype=dtype, device=device) if needs[0] else None
        self.weight = torch.zeros(weight.shape, dtype=dtype, device=device) if needs[1] else None
        self.bias = torch.zeros(weight.shape[0], dtype=dtype, device=device) if needs[2] else None

    def add_chunk(self, grad_z, h_chunk, index, weight):
        """Add one chunk's contribution; ``grad_z`` ``[C, V]``, ``h_chunk`` ``[C, H]`` and
        ``weight`` ``[V, H]`` in the GEMM dtype, ``index`` ``[C]`` rows of ``hidden``."""
        if self.hidden is not None:
            self.hidden.index_copy_(0, index, (grad_z @ weight).to(self.hidden.dtype))
        if self.weight is not None:
            accumulate_mm_(self.weight, grad_z.T, h_chunk)
        if self.bias is not None:
            self.bias += grad_z.sum(0, dtype=self.bias.dtype)


def _chunks(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def _logprobs(rows, z, targets, transform):
    return rows.target_logprobs(z if transform is None else transform(z), targets)


def _terms_and_grad(rows, z, targets, transform, spec, *, want_grad, **scaling):
    """``(RowTerms, d loss / d z or None)`` of one chunk; through ``transform`` by local autograd."""
    if transform is None or not want_grad:
        z = z if transform is None else transform(z)
        return rows.terms_and_grad_(z, targets, spec, want_grad=want_grad, **scaling)
    with torch.enable_grad():
        z = z.requires_grad_()
        transformed = transform(z)
    terms, grad_transformed = rows.terms_and_grad_(transformed.detach(), targets, spec, want_grad=True, **scaling)
    (grad_z,) = torch.autograd.grad(transformed, z, grad_transformed)
    return terms, grad_z


class _PerToken:
    """``[N]`` fp32 buffers of the per-token results (log p, entropy, weight, KL), filled chunk by chunk."""

    def __init__(self, n: int, device, spec: LossSpec):
        zeros = lambda: torch.zeros(n, dtype=torch.float32, device=device)  # noqa: E731
        self.logp, self.entropy = zeros(), zeros()
        self.weight = zeros() if spec.weights_from_entropy else None
        self.kl = zeros() if spec.needs_reference else None

    def record(self, rows: torch.Tensor, terms) -> None:
        self.logp[rows] = terms.logp
        self.entropy[rows] = terms.entropy
        if self.weight is not None:
            self.weight[rows] = terms.weight
        if self.kl is not None:
            self.kl[rows] = terms.kl


def _weights(cfg: HeadConfig, logp: torch.Tensor, entropy_weight: torch.Tensor | None, mask_bt: torch.Tensor):
    """``([B, T] weights, sequence counts or None)`` from the per-token buffers."""
    if entropy_weight is not None:
        return entropy_weight.view_as(mask_bt) * mask_bt, None
    spec = cfg.spec
    raw = sequence_weights(logp.view_as(mask_bt), mask_bt, spec.level, spec.alpha, cfg.segments)
    counts = count_sequences(raw == 0, mask_bt, cfg.segments) if spec.needs_sequences else None
    return apply_floor(raw, mask_bt, spec.min_weight), counts


def fused_forward(hidden, weight, bias, shifted_labels, mask, cfg: HeadConfig, needs_grad):
    """Loss, statistics and (when ``needs_grad`` asks) gradients, chunk by chunk.

    Args:
        hidden: ``[N, H]``; weight: ``[V, H]``; bias: ``[V]`` or None (any float dtypes).
        shifted_labels: ``[N]`` int64 targets (any value where ``mask`` is False).
        mask: ``[N]`` bool supervised positions.
        needs_grad: ``(hidden, weight, bias)`` booleans.

    Returns:
        ``(loss, stats, grads, scale)`` with ``grads`` a :class:`_Gradients` (or None) holding
        ``scale`` times the gradients.
    """
    rows, dtype, spec, reference = cfg.rows, cfg.gemm_dtype, cfg.spec, cfg.reference
    index = mask.nonzero().squeeze(1)
    targets = shifted_labels[index]
    supervised = index.numel()
    w_gemm = weight.to(dtype)
    b_gemm = None if bias is None else bias.to(dtype)
    logit_dtype = torch.float32 if cfg.fp32_logits and dtype.itemsize < 4 else dtype
    per_logit = rows.bytes_per_logit(logit_dtype) + (dtype.itemsize if logit_dtype != dtype else 0)
    heads = 1 if reference is None else 2
    chunk = cfg.chunk_size or auto_chunk_size(supervised, weight.shape[0], per_logit, hidden.device, heads)
    mask_bt = mask.view(cfg.batch, cfg.seq_len)
    n_items = normaliser(mask_bt, cfg.num_items_in_batch)
    per_token = _PerToken(mask.numel(), hidden.device, spec)

    def logits_of(part):
        h_chunk = hidden[index[part]].to(dtype)
        ref = None if reference is None else reference.chunk_logits(index[part], cfg.fp32_logits)
        return h_chunk, chunk_logits(h_chunk, w_gemm, b_gemm, cfg.fp32_logits), ref

    want_grads = any(needs_grad)
    weights, counts = None, None
    if spec.needs_sequences and want_grads:  # first pass: every log p, for the sequence weights
        for part in _chunks(supervised, chunk):
            z = chunk_logits(hidden[index[part]].to(dtype), w_gemm, b_gemm, cfg.fp32_logits)
            per_token.logp[index[part]] = _logprobs(rows, z, targets[part], cfg.transform)
            del z
        weights, counts = _weights(cfg, per_token.logp, None, mask_bt)

    grads, scale = None, 1.0
    if want_grads:
        grads = _Gradients(hidden, weight, needs_grad, accumulator_dtype(dtype))
        scale = gradient_scale(dtype, n_items, cfg.grad_scale)
    inv_n = scale / n_items
    for part in _chunks(supervised, chunk):
        h_chunk, z, ref = logits_of(part)
        token_scale = None if weights is None else weights.view(-1)[index[part]] * inv_n
        terms, grad_z = _terms_and_grad(
            rows, z, targets[part], cfg.transform, spec, want_grad=want_grads, scale=token_scale, inv_n=inv_n, ref=ref
        )
        per_token.record(index[part], terms)
        if grad_z is not None:
            grads.add_chunk(grad_z.to(dtype), h_chunk, index[part], w_gemm)  # the gradient GEMMs run in the GEMM dtype
        del z, ref, grad_z
    if weights is None:
        weights, counts = _weights(cfg, per_token.logp, per_token.weight, mask_bt)

    kl = None if per_token.kl is None else per_token.kl.view_as(mask_bt)
    loss, stats = reduce_loss(
        per_token.logp.view_as(mask_bt), mask_bt, weights, cfg.num_items_in_batch,
        entropy=per_token.entropy.view_as(mask_bt), kl=kl, kl_coef=spec.kl_coef, sequences=counts,
    )
    return loss, stats, grads, scale


class LinearDFTFunction(torch.autograd.Function):
    """``apply(hidden [N, H], weight [V, H], bias [V] | None, shifted_labels [N], mask [N],
    cfg) -> (loss, *LossStats fields)``; only ``loss`` is differentiable."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, shifted_labels, mask, cfg):
        # needs_input_grad reflects requires_grad even under torch.no_grad(); skip the gradient
        # GEMMs there.
        needs = tuple(need and cfg.grad_enabled for need in ctx.needs_input_grad[:3])
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            loss, stats, grads, scale = fused_forward(hidden, weight, bias, shifted_labels, mask, cfg, needs)
        ctx.grads, ctx.scale, ctx.gemm_dtype = grads, scale, cfg.gemm_dtype
        ctx.input_dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        values = tuple(getattr(stats, item.name) for item in fields(stats))
        ctx.mark_non_differentiable(*values)
        return (loss, *values)

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        grads = ctx.grads
        if grads is None:
            raise RuntimeError(
                "linear_dft's backward ran twice: its gradients are computed in the forward pass and "
                "handed over once; recompute the loss instead of using retain_graph=True."
            )
        ctx.grads = None
        outputs = []
        for grad, dtype, is_param in zip((grads.hidden, grads.weight, grads.bias), ctx.input_dtypes, (False, True, True)):
            if grad is not None:
                grad = grad.mul_(grad_loss.to(grad.dtype) / ctx.scale)
                grad = (grad.to(ctx.gemm_dtype) if is_param else grad).to(dtype)
            outputs.append(grad)
        return (*outputs, None, None, None)
