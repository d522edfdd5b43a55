"""Public entry points of the fused head: :func:`linear_sft_and_stats` (any objective of
:class:`~dft_mm.loss_spec.LossSpec`), :func:`linear_dft` and :func:`linear_dft_and_stats`."""

from __future__ import annotations

import math
import os

import torch

from dft_mm.fused.autograd import HeadConfig, LinearDFTFunction
from dft_mm.fused.reference import ReferenceHead
from dft_mm.fused.transforms import LogitTransform
from dft_mm.loss_spec import TRITON_OBJECTIVES, LossSpec
from dft_mm.losses import (
    LossStats,
    NumItems,
    check_label_range,
    check_segment_ids,
    shift_labels,
)

BACKENDS = ("auto", "torch", "triton")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)




def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, objective: str = "dft"):
    """The rows implementation for ``backend`` on ``device`` (``dtype``: the GEMM dtype).

    ``auto`` is the chunked torch backend everywhere: the Triton kernel becomes the CUDA
    default only once it has passed on a GPU with its numbers recorded in
    docs/benchmarks.md. ``triton`` selects it explicitly (for the ``nll`` and ``dft``
    objectives); on a CPU tensor it needs ``TRITON_INTERPRET=1`` (the interpreter; tests only).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    if backend in ("auto", "torch"):
        from dft_mm.fused.torch_rows import TorchRows

        return TorchRows()
    if objective not in TRITON_OBJECTIVES:
        raise ValueError(f"the triton backend serves {' and '.join(TRITON_OBJECTIVES)}, not {objective}; use backend='torch'.")
    if dtype not in TRITON_DTYPES:
        raise ValueError(f"the triton backend takes fp32/fp16/bf16 inputs; got {dtype}. Use backend='torch'.")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"the triton backend needs CUDA tensors (got {device}); set TRITON_INTERPRET=1 before importing "
            "triton to run its kernels on CPU in the interpreter, or use backend='torch'."
        )
    from dft_mm.fused.triton_rows import TritonRows

    return TritonRows()


def gemm_dtype_for(hidden: torch.Tensor) -> torch.dtype:
    """The dtype ``F.linear(hidden, weight)`` would multiply in: autocast's when autocast is
    on for ``hidden``'s device (and ``hidden`` is a float of at most fp32), else ``hidden``'s."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device) and hidden.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


def linear_sft_and_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    spec: LossSpec,
    *,
    reference: ReferenceHead | None = None,
    num_items_in_batch: NumItems = None,
    ignore_index: int = -100,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
    segment_ids: torch.Tensor | None = None,
    logit_transform: LogitTransform | None = None,
    grad_scale: float | None = None,
    fp32_logits: bool = False,
) -> tuple[torch.Tensor, LossStats]:
    """The SFT objective ``spec`` of ``hidden @ weight.T (+ bias)`` without ``[B, T, V]`` logits.

    Same value, gradients and :class:`~dft_mm.losses.LossStats` as
    ``dft_mm.losses.sft_loss_and_stats(logit_transform(F.linear(hidden, weight, bias)), labels,
    spec, ref_logits=...)``, with at most one chunk of ``chunk_size x V`` logits alive at a time
    (two with a reference). ``reference`` (ASFT): the reference model's last hidden states and
    head (:class:`~dft_mm.fused.reference.ReferenceHead`); its logits are multiplied chunk by
    chunk beside the policy's. Other arguments as in :func:`linear_dft`.

    Example::

        >>> import torch
        >>> from dft_mm.fused.reference import ReferenceHead
        >>> hidden = torch.randn(2, 6, 16, requires_grad=True)
        >>> head = torch.nn.Linear(16, 50, bias=False)
        >>> labels = torch.tensor([[-100, -100, 3, 4, 5, 6], [-100, 7, 8, 9, -100, -100]])
        >>> reference = ReferenceHead(hidden.detach().clone(), head.weight.detach().clone())
        >>> loss, stats = linear_sft_and_stats(hidden, head.weight, labels, LossSpec.asft(0.1), reference=reference)
        >>> round(stats.kl, 6)
        0.0
    """
    if hidden.dim() != 3 or labels.shape != hidden.shape[:2]:
        raise ValueError(
            f"hidden must be [B, T, H] and labels [B, T]; got hidden {tuple(hidden.shape)}, labels {tuple(labels.shape)}."
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(f"weight must be [V, H={hidden.shape[2]}]; got {tuple(weight.shape)}.")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be [V={weight.shape[0]}]; got {tuple(bias.shape)}.")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None (automatic); got {chunk_size}.")
    if grad_scale is not None and not (math.isfinite(grad_scale) and grad_scale > 0):
        raise ValueError(f"grad_scale must be a finite number > 0 (the loss scaler's scale); got {grad_scale}.")
    if spec.needs_reference != (reference is not None):
        raise ValueError(f"{spec.objective} {'needs' if spec.needs_reference else 'takes no'} reference.")
    check_segment_ids(segment_ids, labels)
    dtype = gemm_dtype_for(hidden)
    rows = resolve_backend(backend, hidden.device, dtype, spec.objective)
    if reference is not None:
        reference.check(labels.shape, weight.shape[0])
        reference = ReferenceHead(reference.hidden, reference.weight, reference.bias, reference.transform,
                                  reference.gemm_dtype or gemm_dtype_for(reference.hidden)).for_gemm()

    batch, seq_len, _ = hidden.shape
    shifted = shift_labels(labels, ignore_index).reshape(-1).long()
    mask = shifted != ignore_index
    check_label_range(shifted, mask, weight.shape[0])
    segments = None
    if segment_ids is not None and spec.needs_sequences:
        segments = shift_labels(segment_ids.to(hidden.device).long(), 0)
    cfg = HeadConfig(
        batch=batch,
        seq_len=seq_len,
        spec=spec,
        num_items_in_batch=num_items_in_batch,
        chunk_size=chunk_size,
        rows=rows,
        grad_enabled=torch.is_grad_enabled(),
        gemm_dtype=dtype,
        segments=segments,
        transform=logit_transform,
        grad_scale=grad_scale,
        fp32_logits=fp32_logits,
        reference=reference,
    )
    loss, *values = LinearDFTFunction.apply(hidden.reshape(batch * seq_len, -1), weight, bias, shifted, mask, cfg)
    return loss, LossStats(*values)


def linear_dft_and_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    level: str = "token",
    alpha: float = 1.0,
    min_weight: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, LossStats]:
    """:func:`linear_dft` plus the :class:`~dft_mm.losses.LossStats` of
    :func:`dft_mm.losses.dft_loss_and_stats` (``nll_sum``, ``prob_sum``, ``num_tokens``, ...)."""
    return linear_sft_and_stats(hidden, weight, labels, LossSpec.dft(level, alpha, min_weight), **kwargs)


def linear_dft(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    level: str = "token",
    alpha: float = 1.0,
    min_weight: float = 0.0,
    **kwargs,
) -> torch.Tensor:
    """DFT loss of ``hidden @ weight.T (+ bias)`` without materialising ``[B, T, V]`` logits.

    Same value and gradients as ``dft_mm.losses.dft_loss(logit_transform(F.linear(hidden,
    weight, bias)), labels, ...)``, with at most one chunk of ``chunk_size x V`` logits alive
    at a time. The GEMMs run in the dtype ``F.linear`` would use (autocast's, else the hidden
    states'); weight and bias gradients accumulate in fp32.

    Args:
        hidden: ``[B, T, H]`` final hidden states, unshifted (position ``t`` predicts
            ``labels[t + 1]``), any float dtype.
        weight: ``[V, H]`` LM-head weight (tied embeddings work: pass the shared Parameter).
        labels: ``[B, T]`` unshifted labels, ``ignore_index`` on unsupervised positions.
        level, alpha, min_weight: as in :func:`dft_mm.losses.dft_loss`.

    Keyword arguments (all of :func:`linear_sft_and_stats`):
        num_items_in_batch, ignore_index: as in :func:`dft_mm.losses.dft_loss`.
        bias: optional ``[V]`` LM-head bias.
        backend: ``"auto"`` (the chunked torch backend), ``"torch"`` or ``"triton"`` (CUDA).
        chunk_size: supervised tokens per chunk; None picks it from free memory and ``V``.
        segment_ids: optional ``[B, T]`` sample ids of packed rows, as in
            :func:`dft_mm.losses.dft_loss`.
        logit_transform: what the model does to its logits after the head (soft-capping,
            scaling), replayed exactly; see :class:`dft_mm.fused.transforms.LogitTransform`.
        grad_scale: fp16 only: the scale the loss will be multiplied by before backward (a
            GradScaler's ``get_scale()``), so the fp16 gradients round exactly as on the
            unfused path; None picks a safe power of two.
        fp32_logits: keep each chunk's logits as the GEMM's fp32 accumulator instead of
            rounding them to the GEMM dtype as ``nn.Linear`` does: in bf16/fp16 the gradients
            are then at the dtype's rounding floor rather than equal to the unfused head's.

    Returns:
        Scalar fp32 loss; exactly 0 and still attached to the graph when no token is
        supervised.

    Example::

        >>> import torch
        >>> hidden = torch.randn(2, 6, 16, requires_grad=True)
        >>> head = torch.nn.Linear(16, 50, bias=False)
        >>> labels = torch.tensor([[-100, -100, 3, 4, 5, 6], [-100, 7, 8, 9, -100, -100]])
        >>> loss = linear_dft(hidden, head.weight, labels, chunk_size=4)
        >>> loss.backward()
    """
    return linear_dft_and_stats(hidden, weight, labels, level=level, alpha=alpha, min_weight=min_weight, **kwargs)[0]
