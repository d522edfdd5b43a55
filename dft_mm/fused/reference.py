"""The frozen reference model's side of ASFT's KL term in the fused head.

:class:`ReferenceHead` holds what the reference computed up to its LM head: its last hidden
states ``[B, T, H_ref]`` (from a forward without gradient) and its head's weight and bias. The
fused head multiplies the reference's rows chunk by chunk beside the policy's, so the
reference's ``[B, T, V]`` logits never exist either.

Example::

    >>> import torch
    >>> ref = ReferenceHead(hidden=torch.randn(2, 6, 16), weight=torch.randn(50, 16))
    >>> ref.for_gemm().chunk_logits(torch.tensor([1, 7]), fp32_logits=False).shape
    torch.Size([2, 50])
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from dft_mm.fused.chunking import chunk_logits
from dft_mm.fused.transforms import LogitTransform


@dataclass
class ReferenceHead:
    """``hidden`` ``[B, T, H_ref]`` (no gradient), ``weight`` ``[V, H_ref]``, optional ``bias``
    ``[V]``, the reference's own logit ``transform``, and the GEMM dtype its head multiplies in
    (``gemm_dtype``; None: the hidden states' dtype)."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    transform: LogitTransform | None = None
    gemm_dtype: torch.dtype | None = None

    def check(self, batch_shape: torch.Size, vocab: int) -> None:
        """Refuse a reference that does not line up with the policy's batch and vocabulary."""
        if self.hidden.dim() != 3 or self.hidden.shape[:2] != batch_shape:
            raise ValueError(
                f"the reference's hidden states {tuple(self.hidden.shape)} do not match the policy's batch "
                f"{tuple(batch_shape)}: it must see the same tokens."
            )
        if self.weight.shape != (vocab, self.hidden.shape[2]):
            raise ValueError(
                f"the reference's head weight {tuple(self.weight.shape)} must be [V={vocab}, H_ref={self.hidden.shape[2]}]: "
                "ASFT's KL needs a reference with the policy's vocabulary."
            )

    def for_gemm(self) -> "ReferenceHead":
        """This reference with its head's weight and bias cast once to the GEMM dtype."""
        dtype = self.gemm_dtype or self.hidden.dtype
        with torch.no_grad():
            bias = None if self.bias is None else self.bias.to(dtype)
            return replace(self, hidden=self.hidden.detach(), weight=self.weight.detach().to(dtype), bias=bias,
                           gemm_dtype=dtype)

    def chunk_logits(self, rows: torch.Tensor, fp32_logits: bool) -> torch.Tensor:
        """The reference's logits ``[C, V]`` (its transform applied) of flattened positions ``rows``
        ``[C]``, multiplied in the GEMM dtype (call on :meth:`for_gemm`'s result)."""
        with torch.no_grad():
            z = chunk_logits(self.hidden.flatten(0, 1)[rows].to(self.weight.dtype), self.weight, self.bias, fp32_logits)
            return z if self.transform is None else self.transform(z)
