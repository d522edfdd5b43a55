"""Per-chunk softmax work of the fused head in plain PyTorch (any device; the reference).

Everything is computed in the *compute dtype* (fp32, or fp64 for fp64 inputs): the hidden
chunk and the weight are upcast, so results match :func:`dft_mm.losses.dft_loss` to fp32
rounding. On a GPU with a bf16 head this costs an fp32 copy of the weight; use the Triton
backend there.
"""

from __future__ import annotations

import torch

from dft_mm.losses import dft_weights


class TorchRows:
    """Row operations on a chunk of logits ``z`` ``[C, V]`` with targets ``y`` ``[C]``."""

    name = "torch"
    # fp32 logits + the temporary of logsumexp.
    bytes_per_logit = 8

    @staticmethod
    def compute_dtype(dtype: torch.dtype) -> torch.dtype:
        return torch.promote_types(dtype, torch.float32)

    def prepare(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        """``(weight, bias)`` as the GEMMs use them: upcast to the compute dtype."""
        dtype = self.compute_dtype(hidden.dtype)
        return weight.to(dtype), None if bias is None else bias.to(dtype)

    def grad_dtypes(self, hidden: torch.Tensor, weight: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
        """Accumulator dtypes of ``(grad_hidden, grad_weight)``."""
        dtype = self.compute_dtype(hidden.dtype)
        return dtype, dtype

    def logits(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``[C, H] x [V, H]^T (+ bias)`` -> contiguous ``[C, V]`` in the compute dtype."""
        h = h.to(weight.dtype)
        return h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)

    @staticmethod
    def _logprobs_lse(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lse = torch.logsumexp(z, dim=-1)
        return z.gather(1, y[:, None]).squeeze(1) - lse, lse

    def target_logprobs(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p_y`` ``[C]`` fp32 of logits ``z`` ``[C, V]``."""
        return self._logprobs_lse(z, y)[0].float()

    def softmax_grad_(self, z, y, *, scale, alpha, inv_n, out_dtype):
        """Overwrite ``z`` with ``d loss / d z = scale * (softmax(z) - onehot(y))``.

        ``scale`` ``[C]`` is the per-token ``w / N``; ``None`` means token level, where the
        weight comes from the row's own probability (``dft_weights(level="token")``).
        ``inv_n`` is ``1 / N`` (0-dim tensor). ``out_dtype`` is the compute dtype here (the
        prepared weight's). Returns ``(log p_y [C] fp32, grad [C, V])``.
        """
        logp, lse = self._logprobs_lse(z, y)
        if scale is None:
            scale = dft_weights(logp[None], torch.ones_like(logp, dtype=torch.bool)[None], "token", alpha)[0] * inv_n
        scale = scale.to(z.dtype)
        z.sub_(lse[:, None]).exp_().mul_(scale[:, None])
        z.scatter_add_(1, y[:, None], -scale[:, None])
        return logp.float(), z.to(out_dtype)
