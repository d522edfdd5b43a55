"""Per-chunk softmax work of the fused head as one Triton kernel (CUDA; or the Triton
interpreter on CPU with ``TRITON_INTERPRET=1``, which the tests use).

The logits GEMM stays in cuBLAS, in the GEMM dtype, so a chunk's logits ``z`` ``[C, V]`` are
exactly what ``nn.Linear`` would return. One program handles one token row:

1. an online logsumexp over vocabulary tiles in fp32 (running max and rescaled sum, one read
   of the row);
2. the target log-probability ``log p_y = z_y - lse`` and, at token level, the DFT weight
   ``p_y ** alpha`` in fp32;
3. a second sweep writing ``d loss / d z = scale * (softmax(z) - onehot(y))`` over ``z``
   itself, in ``z``'s dtype: each element is read and written by the same thread with the
   same layout, so the in-place update needs no barrier and no second ``[C, V]`` buffer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_BLOCK = 8192


@triton.jit
def _dft_rows_kernel(
    z_ptr,
    z_stride,
    y_ptr,
    scale_ptr,
    inv_n_ptr,
    logp_ptr,
    vocab,
    alpha,
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
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(z_row + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(x, 0))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(x - new_max), 0)
        running_max = new_max
    lse = running_max + tl.log(running_sum)
    logp = tl.load(z_row + target).to(tl.float32) - lse
    tl.store(logp_ptr + row, logp)

    if WRITE_GRAD:
        if TOKEN_SCALE:
            scale = tl.load(inv_n_ptr).to(tl.float32)
            if not ALPHA_ZERO:
                scale = scale * tl.exp(alpha * logp)
        else:
            scale = tl.load(scale_ptr + row).to(tl.float32)
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(z_row + cols, mask=cols < vocab, other=0.0).to(tl.float32)
            g = tl.exp(x - lse) * scale
            g = tl.where(cols == target, g - scale, g)
            tl.store(z_row + cols, g.to(z_ptr.dtype.element_ty), mask=cols < vocab)


def _launch(z, y, logp, *, write_grad=False, scale=None, inv_n=None, alpha=0.0):
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
        vocab,
        float(alpha),
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
    def target_logprobs(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p_y`` ``[C]`` fp32 (one sweep of the kernel, nothing written to ``z``)."""
        logp = torch.empty(z.shape[0], dtype=torch.float32, device=z.device)
        _launch(z.contiguous(), y, logp)
        return logp

    def softmax_grad_(self, z, y, *, scale, alpha, inv_n):
        """Overwrite ``z`` with ``scale * (softmax(z) - onehot(y))`` (same dtype).

        ``scale`` ``[C]`` fp32 is ``w / N`` per token; ``None`` means token level (weight
        ``p_y ** alpha`` computed in the kernel, times ``inv_n``). Returns
        ``(log p_y [C] fp32, grad [C, V])`` where ``grad`` is ``z``.
        """
        z = z.contiguous()
        logp = torch.empty(z.shape[0], dtype=torch.float32, device=z.device)
        _launch(z, y, logp, write_grad=True, scale=None if scale is None else scale.float().contiguous(), inv_n=inv_n, alpha=alpha)
        return logp, z
