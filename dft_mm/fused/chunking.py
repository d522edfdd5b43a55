"""How many tokens one chunk of the fused head processes at a time.

A chunk of ``C`` tokens holds ``C x V`` logits (plus backend temporaries), so the chunk
size trades GEMM efficiency (bigger is better) against peak memory (smaller is better).
:func:`auto_chunk_size` takes the largest multiple of 64 tokens whose logits fit in
``min(free memory / 8, MAX_CHUNK_BYTES)``; callers override it with ``chunk_size=``.
"""

from __future__ import annotations

import os

import torch

# Cap on one chunk's logit buffers. At V=152064 (Qwen2.5) and 4 bytes per logit this is a
# 256-token chunk: 0.15 GiB beside the bf16 weight gradient (1.02 GiB at H=3584), which
# keeps the Triton head's extra memory near 1.3 GiB at 16k tokens.
MAX_CHUNK_BYTES = 160 * 2**20


def free_memory_bytes(device: torch.device) -> int:
    """Free memory where the chunk will live: the CUDA allocator's view of the device, or
    the host's free physical pages."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_chunk_size(num_tokens: int, vocab: int, bytes_per_logit: int, device: torch.device) -> int:
    """Tokens per chunk for ``num_tokens`` supervised tokens and a ``vocab``-sized head.

    ``bytes_per_logit`` is what the backend keeps per logit of a chunk (fp32 logits plus
    temporaries). The result is at least 1 and at most ``num_tokens`` (1 when there are none).
    """
    budget = min(free_memory_bytes(device) // 8, MAX_CHUNK_BYTES)
    rows = max(budget // max(vocab * bytes_per_logit, 1), 1)
    if rows >= 64:
        rows = rows // 64 * 64
    return int(max(1, min(num_tokens, rows)))
