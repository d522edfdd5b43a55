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

:class:`HeadCapture` does the same for a frozen reference model (ASFT): while armed, the
reference's ``lm_head`` keeps its input hidden states and weight (a copy when an engine
shards the weight and frees it after the call) and returns the same kind of empty stub, so
the reference's forward never computes its ``[B, T, V]`` logits either.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from dft_mm.fused import linear_sft_and_stats
from dft_mm.fused.api import gemm_dtype_for
from dft_mm.fused.reference import ReferenceHead
from dft_mm.fused.transforms import LogitTransform
from dft_mm.loss_spec import LossSpec
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


def _stub(hidden: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """An empty ``[B, T, 0]`` view of ``source`` (a scalar) in place of the logits."""
    return source.reshape(1, 1, 1).expand(*hidden.shape[:2], 1)[..., :0]


class HeadCapture:
    """Keeps the hidden states and weight a reference model's ``lm_head`` receives while armed.

    ``copy_weight``: the engine frees the (gathered) weight after the call (DeepSpeed ZeRO-3,
    FSDP), so it is copied, once per forward; otherwise the parameter itself is kept.
    ``same_as``: the policy's head module, when the reference *is* the policy with its
    adapters disabled (LoRA): its weight is then the policy's, taken when the loss is computed.
    """

    def __init__(self, head: torch.nn.Linear, transform: LogitTransform | None, *, copy_weight: bool,
                 shares_policy_head: bool = False):
        self.head = head
        self.transform = transform
        self.copy_weight = copy_weight
        self.shares_policy_head = shares_policy_head
        self._captured: ReferenceHead | None = None

    @contextmanager
    def armed(self):
        self._captured = None
        self.head.forward = self._forward
        try:
            yield
        finally:
            del self.head.forward

    def take(self) -> ReferenceHead:
        """The last armed forward's :class:`~dft_mm.fused.reference.ReferenceHead` (its weight
        None when it shares the policy's head)."""
        captured, self._captured = self._captured, None
        if captured is None:
            raise RuntimeError("dft_mm: the reference model's forward never called its lm_head; set dft_fused: false.")
        return captured

    def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight, bias = None, None
        if not self.shares_policy_head:
            weight, bias = self.head.weight.detach(), self.head.bias
            if self.copy_weight:
                weight = weight.clone()
                bias = None if bias is None else bias.detach().clone()
        self._captured = ReferenceHead(hidden.detach(), weight, bias, self.transform, gemm_dtype_for(hidden))
        return _stub(hidden, hidden.new_zeros(()))


class FusedLMHead:
    """Computes the SFT loss inside ``lm_head``'s forward while :meth:`armed`."""

    def __init__(self, head: torch.nn.Linear, spec: LossSpec, *, backend: str = "auto",
                 transform: LogitTransform | None = None):
        self.head = head
        self.spec = spec
        self.backend = backend
        self.transform = transform
        self._pending: tuple | None = None
        self._result: FusedResult | None = None

    @contextmanager
    def armed(self, labels: torch.Tensor, num_items_in_batch, segment_ids: torch.Tensor | None = None,
              loss_scale: float | None = None, reference: ReferenceHead | None = None):
        """Route the next ``lm_head`` call through the fused loss (labels ``[B, T]``;
        ``loss_scale``: an fp16 loss scaler's current scale, when there is one; ``reference``:
        the reference model's captured head, for ASFT)."""
        self._pending = (labels, num_items_in_batch, segment_ids, loss_scale, reference)
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
        labels, num_items_in_batch, segment_ids, loss_scale, reference = self._pending
        if hidden.shape[:2] != labels.shape:
            raise RuntimeError(
                f"dft_mm fused head: lm_head got hidden states {tuple(hidden.shape)} for labels "
                f"{tuple(labels.shape)}; the model sliced its hidden states. Set dft_fused: false."
            )
        if reference is not None and reference.weight is None:  # the policy itself, adapters disabled
            reference = ReferenceHead(reference.hidden, self.head.weight.detach(), self.head.bias, reference.transform,
                                      reference.gemm_dtype)
        loss, stats = linear_sft_and_stats(
            hidden,
            self.head.weight,
            labels.to(hidden.device),
            self.spec,
            reference=reference,
            num_items_in_batch=num_items_in_batch,
            bias=self.head.bias,
            backend=self.backend,
            segment_ids=None if segment_ids is None else segment_ids.to(hidden.device),
            logit_transform=self.transform,
            grad_scale=loss_scale,
        )
        stub = _stub(hidden, loss)
        self._result = FusedResult(loss, stats, stub)
        return stub
