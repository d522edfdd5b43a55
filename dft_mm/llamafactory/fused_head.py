"""Glue between a model's ``lm_head`` and :func:`dft_mm.fused.linear_dft_and_stats`.

While armed (one forward), the ``lm_head`` module's ``forward`` is replaced: it receives the
final hidden states ``[B, T, H]``, computes the loss with the fused head and returns a
*stub* in place of the logits: an empty ``[B, T, 0]`` view of the loss. No ``[B, T, V]``
tensor is ever allocated, and the model's own forward (HF, Liger's, PEFT-wrapped,
Qwen2.5-VL) is untouched otherwise.

Engines see an ordinary module call whose output the loss depends on:

* the loss is computed *inside* ``lm_head``'s call, so DeepSpeed ZeRO-3 and FSDP have
  gathered the (sharded) weight for it;
* the trainer's loss adds ``stub.sum()`` (exactly 0) so the backward pass flows through the
  model's output, as with real logits: ZeRO-3 and FSDP re-gather the weight before the
  gradient reaches it, and DDP's ``find_unused_parameters`` sees every parameter as used.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from dft_mm.fused import linear_dft_and_stats
from dft_mm.fused.transforms import LogitTransform
from dft_mm.losses import LossStats

# autograd nodes of element-wise maps a model may apply to its logits after lm_head
_ARITHMETIC = ("Mul", "Div", "Tanh", "Add", "Sub", "Pow", "Exp", "Log", "Sigmoid", "Clamp", "Neg")
_EXPECTED = {"mul": ["Mul"], "div": ["Div"], "softcap": ["Div", "Tanh", "Mul"]}


@dataclass
class FusedResult:
    loss: torch.Tensor
    stats: LossStats
    stub: torch.Tensor  # what lm_head returned: [B, T, 0], a view of the loss


def arithmetic_after(logits: torch.Tensor, stub: torch.Tensor) -> list[str]:
    """Names of the element-wise ops between the ``stub`` lm_head returned and the model's
    output ``logits`` (walking the autograd graph back; empty without autograd)."""
    found, node = [], logits.grad_fn
    while node is not None and node is not stub.grad_fn:
        kind = re.sub(r"Backward\d*$", "", type(node).__name__)
        if kind in _ARITHMETIC:
            found.append(kind)
        parents = [parent for parent, _ in node.next_functions if parent is not None]
        node = parents[0] if parents else None
    return found[::-1]


class FusedLMHead:
    """Computes the (DFT) loss inside ``lm_head``'s forward while :meth:`armed`."""

    def __init__(self, head: torch.nn.Linear, level: str, alpha: float, *, backend: str = "auto",
                 transform: LogitTransform | None = None):
        self.head = head
        self.level = level
        self.alpha = alpha
        self.backend = backend
        self.transform = transform
        self._pending: tuple | None = None
        self._result: FusedResult | None = None

    @contextmanager
    def armed(self, labels: torch.Tensor, num_items_in_batch, segment_ids: torch.Tensor | None = None,
              loss_scale: float | None = None):
        """Route the next ``lm_head`` call through the fused loss (labels ``[B, T]``;
        ``loss_scale``: an fp16 loss scaler's current scale, when there is one)."""
        self._pending = (labels, num_items_in_batch, segment_ids, loss_scale)
        self._result = None
        self.head.forward = self._forward
        try:
            yield
        finally:
            del self.head.forward  # back to the class's forward
            self._pending = None

    def take(self) -> FusedResult | None:
        """The result of the last armed forward, once; None when there was none."""
        result, self._result = self._result, None
        return result

    def check_output(self, logits: torch.Tensor, stub: torch.Tensor) -> None:
        """Refuse a model output that is not the stub, or that the model changed in a way
        other than the known logit transform (a wrong loss otherwise)."""
        if logits.shape[-1] != 0:
            raise RuntimeError(
                "dft_mm fused head: the model returned logits it did not get from lm_head; it computes them another "
                "way, which the fused head cannot serve. Set dft_fused: false."
            )
        expected = [op for step, _ in (self.transform.steps if self.transform else ()) for op in _EXPECTED[step]]
        found = arithmetic_after(logits, stub)
        if logits.grad_fn is not None and found != expected:
            raise RuntimeError(
                f"dft_mm fused head: the model applies {found or 'nothing'} to its logits after lm_head, but the fused "
                f"head replays {expected or 'nothing'}; the loss would be wrong. Set dft_fused: false."
            )

    def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
        labels, num_items_in_batch, segment_ids, loss_scale = self._pending
        if hidden.shape[:2] != labels.shape:
            raise RuntimeError(
                f"dft_mm fused head: lm_head got hidden states {tuple(hidden.shape)} for labels "
                f"{tuple(labels.shape)}; the model sliced its hidden states. Set dft_fused: false."
            )
        loss, stats = linear_dft_and_stats(
            hidden,
            self.head.weight,
            labels.to(hidden.device),
            level=self.level,
            alpha=self.alpha,
            num_items_in_batch=num_items_in_batch,
            bias=self.head.bias,
            backend=self.backend,
            segment_ids=None if segment_ids is None else segment_ids.to(hidden.device),
            logit_transform=self.transform,
            grad_scale=loss_scale,
        )
        stub = loss.view(1, 1, 1).expand(*hidden.shape[:2], 1)[..., :0]
        self._result = FusedResult(loss, stats, stub)
        return stub
