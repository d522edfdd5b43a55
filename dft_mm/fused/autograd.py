"""The chunked fused linear + DFT head as one ``torch.autograd.Function``.

Shapes: ``N = B * T`` flattened positions, ``S`` supervised ones (label not ignored after
the shift), ``H`` hidden size, ``V`` vocabulary, ``C`` tokens per chunk.

Only the ``S`` supervised rows of the hidden states are ever multiplied by the head, ``C``
at a time, so at most one ``[C, V]`` chunk of logits exists. The gradients of hidden,
weight and bias are produced *during the forward pass* (the weights of every token are known
once its chunk's logits are), and ``backward`` only multiplies them by ``grad_output``.

Passes over the logits:

* ``level="token"`` or ``alpha == 0``: one pass (logits GEMM, softmax kernel, two gradient
  GEMMs), the same three GEMMs as the unfused head.
* ``level="sentence" | "geomean"`` with ``alpha > 0``: the weight of a token depends on the
  sum of log-probabilities over its whole sequence, so a first pass computes every target
  log-probability (one extra logits GEMM, nothing stored but ``S`` floats), then the second
  pass is the token-level pass with the now-known weights: four GEMMs instead of three,
  about 1.33x the token-level time, same memory.
* no gradient needed (evaluation): one logits pass, no gradient GEMMs.

The rows backends (:class:`~dft_mm.fused.torch_rows.TorchRows`,
:class:`~dft_mm.fused.triton_rows.TritonRows`) supply the per-chunk logits GEMM and softmax
work; weights, normaliser and loss reduction are :mod:`dft_mm.losses`' own functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dft_mm.fused.chunking import auto_chunk_size
from dft_mm.losses import NumItems, dft_weights, normaliser, reduce_weighted_nll


@dataclass
class HeadConfig:
    """The non-tensor arguments of one call."""

    batch: int  # B
    seq_len: int  # T
    level: str
    alpha: float
    num_items_in_batch: NumItems
    chunk_size: int | None
    rows: object  # TorchRows | TritonRows
    grad_enabled: bool  # torch.is_grad_enabled() at the call (False under no_grad: evaluation)


class _Gradients:
    """Accumulators for ``grad_hidden [N, H]``, ``grad_weight [V, H]``, ``grad_bias [V]``;
    ``None`` for inputs that need no gradient."""

    def __init__(self, hidden, weight, bias, needs, rows):
        h_dtype, w_dtype = rows.grad_dtypes(hidden, weight)
        self.hidden = torch.zeros(hidden.shape, dtype=h_dtype, device=hidden.device) if needs[0] else None
        self.weight = torch.zeros(weight.shape, dtype=w_dtype, device=weight.device) if needs[1] else None
        b_dtype = torch.promote_types(w_dtype, torch.float32)
        self.bias = torch.zeros(weight.shape[0], dtype=b_dtype, device=weight.device) if needs[2] else None

    def add_chunk(self, grad_z, h_chunk, index, weight):
        """Add one chunk's contribution; ``grad_z`` ``[C, V]``, ``h_chunk`` ``[C, H]``,
        ``index`` ``[C]`` rows of ``hidden``, ``weight`` ``[V, H]`` in ``grad_z``'s dtype."""
        if self.hidden is not None:
            self.hidden.index_copy_(0, index, (grad_z @ weight).to(self.hidden.dtype))
        if self.weight is not None:
            self.weight.addmm_(grad_z.T.to(self.weight.dtype), h_chunk.to(self.weight.dtype))
        if self.bias is not None:
            self.bias += grad_z.sum(0, dtype=self.bias.dtype)


def _chunks(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def fused_forward(hidden, weight, bias, shifted_labels, mask, cfg: HeadConfig, needs_grad):
    """Loss, statistics and (when ``needs_grad`` asks) gradients, chunk by chunk.

    Args:
        hidden: ``[N, H]``; weight: ``[V, H]``; bias: ``[V]`` or None.
        shifted_labels: ``[N]`` int64 targets (any value where ``mask`` is False).
        mask: ``[N]`` bool supervised positions.
        needs_grad: ``(hidden, weight, bias)`` booleans.

    Returns:
        ``(loss, stats, grads)`` with ``grads`` a :class:`_Gradients` or None.
    """
    rows = cfg.rows
    index = mask.nonzero().squeeze(1)
    targets = shifted_labels[index]
    supervised = index.numel()
    w_gemm, b_gemm = rows.prepare(hidden, weight, bias)
    chunk = cfg.chunk_size or auto_chunk_size(supervised, weight.shape[0], rows.bytes_per_logit, hidden.device)
    mask_bt = mask.view(cfg.batch, cfg.seq_len)
    n_items = normaliser(mask_bt, cfg.num_items_in_batch)
    logp = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)

    def weights_from_logp():
        return dft_weights(logp.view_as(mask_bt), mask_bt, cfg.level, cfg.alpha)

    want_grads = any(needs_grad)
    two_pass = cfg.level != "token" and cfg.alpha != 0
    weights = None
    if two_pass or not want_grads:
        for part in _chunks(supervised, chunk):
            z = rows.logits(hidden[index[part]], w_gemm, b_gemm)
            logp[index[part]] = rows.target_logprobs(z, targets[part])
            del z
        weights = weights_from_logp()

    grads = None
    if want_grads:
        grads = _Gradients(hidden, weight, bias, needs_grad, rows)
        inv_n = 1.0 / n_items
        for part in _chunks(supervised, chunk):
            h_chunk = hidden[index[part]]
            z = rows.logits(h_chunk, w_gemm, b_gemm)
            scale = None if weights is None else weights.view(-1)[index[part]] * inv_n
            chunk_logp, grad_z = rows.softmax_grad_(
                z, targets[part], scale=scale, alpha=cfg.alpha, inv_n=inv_n, out_dtype=w_gemm.dtype
            )
            logp[index[part]] = chunk_logp
            grads.add_chunk(grad_z, h_chunk, index[part], w_gemm)
            del z, grad_z
        if weights is None:
            weights = weights_from_logp()

    loss, stats = reduce_weighted_nll(logp.view_as(mask_bt), mask_bt, weights, cfg.num_items_in_batch)
    return loss, stats, grads


class LinearDFTFunction(torch.autograd.Function):
    """``apply(hidden [N, H], weight [V, H], bias [V] | None, shifted_labels [N], mask [N],
    cfg) -> (loss, nll_sum, prob_sum, num_tokens)``; only ``loss`` is differentiable."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, shifted_labels, mask, cfg):
        # needs_input_grad reflects requires_grad even under torch.no_grad(); skip the gradient
        # GEMMs there.
        needs = tuple(need and cfg.grad_enabled for need in ctx.needs_input_grad[:3])
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            loss, stats, grads = fused_forward(hidden, weight, bias, shifted_labels, mask, cfg, needs)
        ctx.grads = grads
        ctx.input_dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(stats.nll_sum, stats.prob_sum, stats.num_tokens)
        return loss, stats.nll_sum, stats.prob_sum, stats.num_tokens

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        grads = ctx.grads
        if grads is None:
            raise RuntimeError(
                "linear_dft's backward ran twice: its gradients are computed in the forward pass and "
                "handed over once; recompute the loss instead of using retain_graph=True."
            )
        ctx.grads = None
        outputs = [
            None if grad is None else grad.mul_(grad_loss.to(grad.dtype)).to(dtype)
            for grad, dtype in zip((grads.hidden, grads.weight, grads.bias), ctx.input_dtypes)
        ]
        return (*outputs, None, None, None)
