"""Per-chunk softmax work of the fused head in plain PyTorch (any device; the reference).

The logits of a chunk come from the GEMM in the GEMM dtype (bf16/fp16/fp32/fp64), exactly as
an ``nn.Linear`` would return them; the softmax, target log-probability, weight and logit
gradient are then computed in fp32 (fp64 for fp64), as :func:`dft_mm.losses.dft_loss` does
on materialised logits, and the gradient is handed back in the GEMM dtype.
"""

from __future__ import annotations

import torch


def _working_copy(z: torch.Tensor) -> torch.Tensor:
    """``z`` in fp32 (fp64 stays fp64); a new tensor when ``z`` is low precision."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


class TorchRows:
    """Row operations on a chunk of logits ``z`` ``[C, V]`` with targets ``y`` ``[C]``."""

    name = "torch"

    @staticmethod
    def bytes_per_logit(gemm_dtype: torch.dtype) -> int:
        """Memory per logit of a chunk: the GEMM output, its fp32 copy, a logsumexp temporary."""
        return gemm_dtype.itemsize + 8

    @staticmethod
    def _logprobs_lse(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lse = torch.logsumexp(z, dim=-1)
        return z.gather(1, y[:, None]).squeeze(1) - lse, lse

    def target_logprobs(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p_y`` ``[C]`` fp32 of logits ``z`` ``[C, V]``."""
        return self._logprobs_lse(_working_copy(z), y)[0].float()

    def softmax_grad_(self, z, y, *, scale, alpha, inv_n):
        """``d loss / d z = scale * (softmax(z) - onehot(y))`` in ``z``'s dtype.

        ``scale`` ``[C]`` is the per-token ``w / N`` (times the head's gradient scale);
        ``None`` means token level, where the weight ``p_y ** alpha`` comes from the row's own
        probability and is multiplied by ``inv_n`` (0-dim tensor). ``z`` may be overwritten.
        Returns ``(log p_y [C] fp32, grad [C, V])``.
        """
        work = _working_copy(z)
        logp, lse = self._logprobs_lse(work, y)
        if scale is None:
            scale = torch.exp(alpha * logp) * inv_n
        scale = scale.to(work.dtype)
        work.sub_(lse[:, None]).exp_().mul_(scale[:, None])
        work.scatter_add_(1, y[:, None], -scale[:, None])
        return logp.float(), work.to(z.dtype)
