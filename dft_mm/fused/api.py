"""Public entry points of the fused head: :func:`linear_dft` and :func:`linear_dft_and_stats`."""

from __future__ import annotations

import os

import torch

from dft_mm.fused.autograd import HeadConfig, LinearDFTFunction
from dft_mm.losses import LossStats, NumItems, check_level_alpha, shift_labels

BACKENDS = ("auto", "torch", "triton")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype):
    """The rows implementation for ``backend`` on ``device``.

    ``auto`` is Triton on CUDA for fp32/fp16/bf16 inputs when Triton imports, else torch.
    ``triton`` on a CPU tensor needs ``TRITON_INTERPRET=1`` (the interpreter; tests only).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    if backend == "auto":
        backend = "triton" if device.type == "cuda" and dtype in TRITON_DTYPES and _triton_importable() else "torch"
    if backend == "torch":
        from dft_mm.fused.torch_rows import TorchRows

        return TorchRows()
    if dtype not in TRITON_DTYPES:
        raise ValueError(f"the triton backend takes fp32/fp16/bf16 inputs; got {dtype}. Use backend='torch'.")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"the triton backend needs CUDA tensors (got {device}); set TRITON_INTERPRET=1 before importing "
            "triton to run its kernels on CPU in the interpreter, or use backend='torch'."
        )
    from dft_mm.fused.triton_rows import TritonRows

    return TritonRows()


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def linear_dft_and_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    level: str = "token",
    alpha: float = 1.0,
    num_items_in_batch: NumItems = None,
    ignore_index: int = -100,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """:func:`linear_dft` plus the :class:`~dft_mm.losses.LossStats` of
    :func:`dft_mm.losses.dft_loss_and_stats` (``nll_sum``, ``prob_sum``, ``num_tokens``)."""
    check_level_alpha(level, alpha)
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
    # Mixed precision (fp32 master weight, bf16 activations): multiply in the activations'
    # dtype like F.linear under autocast; autograd carries the gradient back through the cast.
    weight = weight.to(hidden.dtype)
    bias = None if bias is None else bias.to(hidden.dtype)

    batch, seq_len, _ = hidden.shape
    shifted = shift_labels(labels, ignore_index).reshape(-1)
    mask = shifted != ignore_index
    cfg = HeadConfig(
        batch=batch,
        seq_len=seq_len,
        level=level,
        alpha=alpha,
        num_items_in_batch=num_items_in_batch,
        chunk_size=chunk_size,
        rows=resolve_backend(backend, hidden.device, hidden.dtype),
        grad_enabled=torch.is_grad_enabled(),
    )
    loss, nll_sum, prob_sum, num_tokens = LinearDFTFunction.apply(
        hidden.reshape(batch * seq_len, -1), weight, bias, shifted.long(), mask, cfg
    )
    return loss, LossStats(nll_sum=nll_sum, prob_sum=prob_sum, num_tokens=num_tokens)


def linear_dft(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    level: str = "token",
    alpha: float = 1.0,
    num_items_in_batch: NumItems = None,
    ignore_index: int = -100,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """DFT loss of ``hidden @ weight.T (+ bias)`` without materialising ``[B, T, V]`` logits.

    Same value and gradients as ``dft_mm.losses.dft_loss(hidden @ weight.T + bias, labels,
    ...)``, with at most one chunk of ``chunk_size x V`` fp32 logits alive at a time.

    Args:
        hidden: ``[B, T, H]`` final hidden states, unshifted (position ``t`` predicts
            ``labels[t + 1]``), any float dtype.
        weight: ``[V, H]`` LM-head weight (tied embeddings work: pass the shared Parameter).
        labels: ``[B, T]`` unshifted labels, ``ignore_index`` on unsupervised positions.
        level, alpha, num_items_in_batch, ignore_index: as in :func:`dft_mm.losses.dft_loss`.
        bias: optional ``[V]`` LM-head bias.
        backend: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"torch"`` or ``"triton"``.
        chunk_size: supervised tokens per chunk; None picks it from free memory and ``V``.

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
    return linear_dft_and_stats(
        hidden,
        weight,
        labels,
        level=level,
        alpha=alpha,
        num_items_in_batch=num_items_in_batch,
        ignore_index=ignore_index,
        bias=bias,
        backend=backend,
        chunk_size=chunk_size,
    )[0]
