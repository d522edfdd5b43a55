"""Glue between a model's ``lm_head`` and :func:`dft_mm.fused.linear_dft_and_stats`.

While armed (one training forward), the ``lm_head`` module's ``forward`` is replaced: it
receives the final hidden states ``[B, T, H]``, computes the loss with the fused head and
returns empty logits ``[B, T, 0]``, so no ``[B, T, V]`` tensor is ever allocated. The
model's own forward (HF, Liger's, PEFT-wrapped, Qwen2.5-VL) is untouched otherwise.
Because the loss is computed *inside* the ``lm_head`` call, frameworks that gather
sharded parameters around a module's forward (DeepSpeed ZeRO-3, FSDP) hand us the full
weight and route its gradient as for any other use of the module.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from dft_mm.fused import linear_dft_and_stats
from dft_mm.losses import LossStats


def find_lm_head(model: torch.nn.Module) -> tuple[torch.nn.Linear | None, str]:
    """``(lm_head, "")`` when the model has a plain ``nn.Linear`` output layer we can
    drive (tied embeddings included), else ``(None, reason)``."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        return None, f"{type(model).__name__} exposes no output embeddings (lm_head)"
    if type(head) is not torch.nn.Linear:
        return None, f"its lm_head is a {type(head).__name__} (e.g. LoRA on lm_head), not a plain Linear"
    return head, ""


class FusedLMHead:
    """Computes the (DFT) loss inside ``lm_head``'s forward while :meth:`armed`."""

    def __init__(self, head: torch.nn.Linear, level: str, alpha: float):
        self.head = head
        self.level = level
        self.alpha = alpha
        self._pending: tuple[torch.Tensor, object] | None = None
        self._result: tuple[torch.Tensor, LossStats] | None = None

    @contextmanager
    def armed(self, labels: torch.Tensor, num_items_in_batch):
        """Route the next ``lm_head`` call through the fused loss (labels ``[B, T]``)."""
        self._pending = (labels, num_items_in_batch)
        self._result = None
        self.head.forward = self._forward
        try:
            yield
        finally:
            del self.head.forward  # back to the class's forward
            self._pending = None

    def take(self) -> tuple[torch.Tensor, LossStats] | None:
        """The ``(loss, stats)`` of the last armed forward, once; None when there was none."""
        result, self._result = self._result, None
        return result

    def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
        labels, num_items_in_batch = self._pending
        if hidden.shape[:2] != labels.shape:
            raise RuntimeError(
                f"dft_mm fused head: lm_head got hidden states {tuple(hidden.shape)} for labels "
                f"{tuple(labels.shape)}; the model sliced its hidden states. Set dft_fused: false."
            )
        self._result = linear_dft_and_stats(
            hidden,
            self.head.weight,
            labels.to(hidden.device),
            level=self.level,
            alpha=self.alpha,
            num_items_in_batch=num_items_in_batch,
            bias=self.head.bias,
        )
        return hidden.new_zeros(*hidden.shape[:2], 0)
