"""Per-chunk softmax work of the fused head as one Triton kernel (CUDA; or the Triton
interpreter on CPU with ``TRITON_INTERPRET=1``, which the tests use).

One program handles one token row of a chunk's fp32 logits ``z`` ``[C, V]``:

1. an online logsumexp over vocab tiles (running max and rescaled sum, one read of the row);
2. the target log-probability ``log p_y = z_y - lse`` and, at token level, the DFT weight
   ``p_y ** alpha`` in fp32;
3. a second sweep writing ``d loss / d z = (w / N) * (softmax(z) - onehot(y))`` in the
   GEMM dtype (bf16/fp16/fp32) *over the same buffer*: tile ``j`` of the output occupies
   bytes that fp32 tiles ``<= j`` occupied, which were read before, so the gradient needs
   no second ``[C, V]`` allocation. Warps of a program are not in lock-step, so each tile's
   store waits at a barrier until all warps have read that tile.

The GEMMs around it stay in cuBLAS: logits in fp32 from bf16/fp16 operands
(``torch.mm(..., out_dtype=torch.float32)``), the gradient GEMMs in the input dtype with the
weight gradient accumulated in the weight's dtype (as Liger's fused linear cross entropy does).
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
    g_ptr,
    g_stride,
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
        g_row = g_ptr + row * g_stride
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(z_row + cols, mask=cols < vocab, other=0.0).to(tl.float32)
            g = tl.exp(x - lse) * scale
            g = tl.where(cols == target, g - scale, g)
            # The store below overwrites fp32 elements other warps of this program read
            # (tile 0: this very tile); wait until every warp holds its part of the tile.
            tl.debug_barrier()
            tl.store(g_row + cols, g.to(g_ptr.dtype.element_ty), mask=cols < vocab)


def _launch(z, y, logp, *, grad=None, scale=None, inv_n=None, alpha=0.0):
    rows, vocab = z.shape
    if rows == 0:
        return
    block = min(triton.next_power_of_2(vocab), MAX_BLOCK)
    token_scale = scale is None
    _dft_rows_kernel[(rows,)](
        z,
        z.stride(0),
        z if grad is None else grad,
        z.stride(0) if grad is None else grad.stride(0),
        y,
        logp if scale is None else scale,
        logp if inv_n is None else inv_n.reshape(1).float(),
        logp,
        vocab,
        float(alpha),
        WRITE_GRAD=grad is not None,
        TOKEN_SCALE=token_scale,
        ALPHA_ZERO=float(alpha) == 0.0,
        BLOCK=block,
        num_warps=8 if block >= 2048 else 4,
    )


class TritonRows:
    """Row operations on fp32 logits ``z`` ``[C, V]`` (contiguous) with targets ``y`` ``[C]``."""

    name = "triton"
    # fp32 logits; the gradient is written over them.
    bytes_per_logit = 4

    def prepare(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        """The GEMMs use the weight as it is (bf16/fp16/fp32)."""
        return weight, bias

    def grad_dtypes(self, hidden: torch.Tensor, weight: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
        """Accumulator dtypes of ``(grad_hidden, grad_weight)``: the inputs' own."""
        return hidden.dtype, weight.dtype

    def logits(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """fp32 ``[C, V]`` logits of ``h`` ``[C, H]``: fp32 accumulation *and* output."""
        if h.dtype in (torch.float32, torch.float64):
            z = (h @ weight.T).float()
        elif h.is_cuda:
            z = torch.mm(h, weight.T, out_dtype=torch.float32)
        else:  # the Triton interpreter on CPU (tests): no mixed-dtype GEMM there
            z = h.float() @ weight.float().T
        if bias is not None:
            z += bias.float()
        return z

    @staticmethod
    def target_logprobs(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p_y`` ``[C]`` fp32 (one sweep of the kernel, nothing written to ``z``)."""
        logp = torch.empty(z.shape[0], dtype=torch.float32, device=z.device)
        _launch(z, y, logp)
        return logp

    def softmax_grad_(self, z, y, *, scale, alpha, inv_n, out_dtype):
        """Overwrite ``z``'s storage with ``scale * (softmax(z) - onehot(y))`` in ``out_dtype``.

        ``scale`` ``[C]`` fp32 is ``w / N`` per token; ``None`` means token level (weight
        ``p_y ** alpha`` computed in the kernel, times ``inv_n``). Returns
        ``(log p_y [C] fp32, grad [C, V] out_dtype)``; ``grad`` views ``z``'s memory (row
        stride ``V * 4 / itemsize``).
        """
        vocab = z.shape[1]
        grad = z if out_dtype == torch.float32 else z.view(out_dtype)[:, :vocab]
        logp = torch.empty(z.shape[0], dtype=torch.float32, device=z.device)
        _launch(z, y, logp, grad=grad, scale=None if scale is None else scale.float().contiguous(), inv_n=inv_n, alpha=alpha)
        return logp, grad
