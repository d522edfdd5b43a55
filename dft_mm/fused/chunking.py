"""The fused head's chunks: how many tokens one chunk processes at a time, and its logits GEMM.

A chunk of ``C`` tokens holds ``C x V`` logits (plus backend temporaries), so the chunk
size trades GEMM efficiency (bigger is better) against peak memory (smaller is better).
:func:`auto_chunk_size` takes the largest multiple of 64 tokens whose logits fit in
``min(free memory / 8, heads x cap)``, with ``cap`` = ``MAX_CHUNK_BYTES`` on a GPU and
``HOST_CHUNK_BYTES`` on the host; ``heads`` is 2 when a reference head's chunk (ASFT) lives
beside the policy's, so both objectives multiply chunks of the same rows. Callers override
it with ``chunk_size=``.
"""

from __future__ import annotations

import os

import torch

# Cap on one chunk's logit buffers. At V=152064 (Qwen2.5) this is a 512-token chunk for the
# Triton backend (bf16 logits, gradient written in place) and a 64-token chunk for the torch
# backend (bf16 logits + fp32 copy + temporary): small beside the fp32 weight-gradient
# accumulator (2.03 GiB at H=3584).
MAX_CHUNK_BYTES = 160 * 2**20
# On the host a CPU GEMM of 64 rows is slow (whole LM-head step at V=151936, H=256, 4096
# tokens, median step: 13.2 s at 64 rows, 9.9 s at 128 and 256: docs/benchmarks.md), and host
# memory is not the scarce resource a GPU's is: 128 rows of fp32 logits at Qwen's vocabulary.
HOST_CHUNK_BYTES = 320 * 2**20


def free_memory_bytes(device: torch.device) -> int:
    """Free memory where the chunk will live: the CUDA allocator's view of the device, or
    the host's available memory (free pages plus reclaimable cache)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:  # Linux: what can be allocated without swapping, page cache included
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_chunk_size(num_tokens: int, vocab: int, bytes_per_logit: int, device: torch.device, heads: int = 1) -> int:
    """Tokens per chunk for ``num_tokens`` supervised tokens and a ``vocab``-sized head.

    ``bytes_per_logit`` is what the backend keeps per logit of a chunk (logits plus
    temporaries) on each of ``heads`` heads. The result is at least 1 and at most
    ``num_tokens`` (1 when there are none).
    """
    cap = MAX_CHUNK_BYTES if device.type == "cuda" else HOST_CHUNK_BYTES
    budget = min(free_memory_bytes(device) // 8, heads * cap)
    rows = max(budget // max(heads * vocab * bytes_per_logit, 1), 1)
    if rows >= 64:
        rows = rows // 64 * 64
    return int(max(1, min(num_tokens, rows)))


def chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, fp32_logits: bool) -> torch.Tensor:
    """``[C, H] x [V, H]^T (+ bias)`` -> ``[C, V]``: in the operands' (GEMM) dtype, as
    ``nn.Linear`` returns them; with ``fp32_logits``, the fp32 accumulator of the same GEMM
    (no rounding to a low-precision dtype)."""
    if not fp32_logits or h.dtype in (torch.float32, torch.float64):
        return h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)
    if h.is_cuda:
        z = torch.mm(h, weight.T, out_dtype=torch.float32)
    else:  # no mixed-dtype GEMM on CPU: exact products of the upcast operands
        z = h.float() @ weight.float().T
    return z if bias is None else z.add_(bias.float())
