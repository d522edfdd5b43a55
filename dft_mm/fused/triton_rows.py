"""Per-chunk softmax work of the fused head as one Triton kernel (CUDA; or the Triton
interpreter on CPU with ``TRITON_INTERPRET=1``, which the tests use).

The logits GEMM stays in cuBLAS, in the GEMM dtype, so a chunk's logits ``z`` ``[C, V]`` are
exactly what ``nn.Linear`` would return. One program handles one token row:

1. an online logsumexp over vocabulary tiles in fp32 (running max and rescaled sum, one read
   of the row), with the rescaled sum of ``exp(z) * z`` beside it for the predictive entropy
   ``H = lse - E_p[z]``;
2. the target log-probability ``log p_y = z_y - lse`` and, at token level, the DFT weight
   ``max(p_y ** alpha, min_weight)`` in fp32;
3. a second sweep writing ``d loss / d z = scale * (softmax(z) - onehot(y))`` over ``z``
   itself, in ``z``'s dtype: each element is read and written by the same thread with the
   same layout, so the in-place update needs no barrier and no second ``[C, V]`` buffer.

It serves the NLL and DFT objectives; ASFT's reference softmax and EAFT's top-20 entropy
run in the torch backend (:func:`dft_mm.fused.api.resolve_backend` refuses them here).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dft_mm.fused.torch_rows import RowTerms, token_weight
from dft_mm.loss_spec import LossSpec

MAX_BLOCK = 8192


@triton.jit
def _dft_rows_kernel(
    z_ptr,
    z_stride,
    y_ptr,
    scale_ptr,
    inv_n_ptr,
    logp_ptr,
    entropy_ptr,
    vocab,
    alpha,
    min_weight,
    WRITE_GRAD: tl.constexpr,
    TOKEN_SCALE: tl.constexpr,
    ALPHA_ZERO: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    z_row = z_ptr + row * z_stride
    target = tl.load(y_ptr + row)

    running_max = float("-inf")
    running_sum = 0.0
    running_dot = 0.0  # sum of exp(x - running_max) * x
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(z_row + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(x, 0))
        rescale = tl.exp(running_max - new_max)
        e = tl.exp(x - new_max)
        running_sum = running_sum * rescale + tl.sum(e, 0)
        running_dot = running_dot * rescale + tl.sum(tl.where(e > 0.0, e * x, 0.0), 0)
        running_max = new_max
    lse = running_max + tl.log(running_sum)
    logp = tl.load(z_row + target).to(tl.float32) - lse
    tl.store(logp_ptr + row, logp)
    tl.store(entropy_ptr + row, lse - running_dot / running_sum)

    if WRITE_GRAD:
        if TOKEN_SCALE:
            scale = tl.load(inv_n_ptr).to(tl.float32)
            if not ALPHA_ZERO:
                scale = scale * tl.maximum(tl.exp(alpha * logp), min_weight)
        else:
            scale = tl.load(scale_ptr + row).to(tl.float32)
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(z_row + cols, mask=cols < vocab, other=0.0).to(tl.float32)
            g = tl.exp(x - lse) * scale
            g = tl.where(cols == target, g - scale, g)
            tl.store(z_row + cols, g.to(z_ptr.dtype.element_ty), mask=cols < vocab)


def _launch(z, y, logp, entropy, *, write_grad=False, scale=None, inv_n=None, alpha=0.0, min_weight=0.0):
    rows, vocab = z.shape
    if rows == 0:
        return
    block = min(triton.next_power_of_2(vocab), MAX_BLOCK)
    _dft_rows_kernel[(rows,)](
        z,
        z.stride(0),
        y,
        logp if scale is None else scale,
        logp if inv_n is None else inv_n.reshape(1).float(),
        logp,
        entropy,
        vocab,
        float(alpha),
        float(min_weight),
        WRITE_GRAD=write_grad,
        TOKEN_SCALE=scale is None,
        ALPHA_ZERO=float(alpha) == 0.0,
        BLOCK=block,
        num_warps=8 if block >= 2048 else 4,
    )


class TritonRows:
    """Row operations on contiguous logits ``z`` ``[C, V]`` (bf16/fp16/fp32) with targets ``y`` ``[C]``."""

    name = "triton"

    @staticmethod
    def bytes_per_logit(gemm_dtype: torch.dtype) -> int:
        """The logits alone: the gradient is written over them."""
        return gemm_dtype.itemsize

    @staticmethod
    def _outputs(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.empty(z.shape[0], dtype=torch.float32, device=z.device),
                torch.empty(z.shape[0], dtype=torch.float32, device=z.device))

    def target_logprobs(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p_y`` ``[C]`` fp32 (one sweep of the kernel, nothing written to ``z``)."""
        logp, entropy = self._outputs(z)
        _launch(z.contiguous(), y, logp, entropy)
        return logp

    def terms_and_grad_(self, z, y, spec: LossSpec, *, scale=None, inv_n=None, ref=None, want_grad=True):
        """As :meth:`dft_mm.fused.torch_rows.TorchRows.terms_and_grad_` for the NLL and DFT
        objectives (no ``ref``, no entropy weights): with ``want_grad``, ``z`` is overwritten
        with ``s * (softmax(z) - onehot(y))`` (same dtype) and returned as the gradient."""
        if ref is not None or spec.weights_from_entropy:
            raise ValueError(f"the triton backend does not serve {spec.objective}; use backend='torch'.")
        z = z.contiguous()
        logp, entropy = self._outputs(z)
        _launch(z, y, logp, entropy, write_grad=want_grad, scale=None if scale is None else scale.float().contiguous(),
                inv_n=inv_n, alpha=spec.alpha, min_weight=spec.min_weight)
        weight = token_weight(logp, spec) if scale is None else None
        return RowTerms(logp, entropy, weight), (z if want_grad else None)
