"""The SFT objective dft_mm installs as the HF Trainer's ``compute_loss_func``.

``loss = sum_t (w_t * (-log p_t) + kl_coef * KL_t) / num_items_in_batch`` (:mod:`dft_mm.losses`,
:class:`~dft_mm.loss_spec.LossSpec`), where the Trainer's ``num_items_in_batch`` counts
supervised tokens over all accumulation steps and ranks, for text *and* vision-language
models, so SFT, DFT, ASFT and EAFT are normalised identically. Either from the fused head's
result (taken from :class:`~dft_mm.llamafactory.fused_head.FusedLMHead`) or from the model's
``logits``. ASFT's reference runs first in each forward
(:class:`~dft_mm.llamafactory.reference.ReferencePass`): captured at its last hidden state
for the fused head, or its logits for the unfused path.
A mixture-of-experts router loss the model returns (``aux_loss``) is added with the model's
``router_aux_loss_coef``, as the model itself does when it receives labels.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from dft_mm.llamafactory.fused_head import FusedLMHead
from dft_mm.llamafactory.metrics import StatsWindow
from dft_mm.llamafactory.reference import ReferencePass
from dft_mm.loss_spec import LossSpec
from dft_mm.losses import NonFiniteLogitsError, sft_loss_and_stats


class TrainerObjective:
    """``compute_loss_func(outputs, labels, num_items_in_batch)`` for the HF Trainer.

    Per forward, :meth:`forward` arms the fused head (when there is one and ``fused`` is
    asked) and sets the batch's packed-sample ids; ``__call__`` then returns the loss.
    Training statistics go to ``window`` (only while gradients are enabled).
    """

    def __init__(self, spec: LossSpec, window: StatsWindow, fused: FusedLMHead | None, aux_loss_coef: float | None,
                 step_of, reference: ReferencePass | None = None):
        self.spec = spec
        self.window = window
        self.fused = fused
        self.aux_loss_coef = aux_loss_coef
        self.step_of = step_of  # () -> current training step, for error messages
        self.reference = reference
        self.segments: torch.Tensor | None = None
        self.ref_logits: torch.Tensor | None = None  # the reference's logits of this forward (unfused ASFT)

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        result = self.fused.take() if self.fused is not None else None
        logits = outputs["logits"]
        if result is None:
            with self.steps_named():
                loss, stats = sft_loss_and_stats(
                    logits,
                    labels.to(logits.device),
                    self.spec,
                    ref_logits=self.ref_logits,
                    num_items_in_batch=num_items_in_batch,
                    segment_ids=self.segments,
                )
        else:
            self.fused.check_output(logits, result.stub)
            # + 0 that routes the backward pass through the model's output (see fused_head.py)
            loss, stats = result.loss + logits.sum(), result.stats
        loss = loss + self.router_loss(outputs, loss.device)
        if torch.is_grad_enabled():
            self.window.add(stats)
        return loss

    def router_loss(self, outputs, device) -> torch.Tensor | float:
        aux = outputs.get("aux_loss") if hasattr(outputs, "get") else None
        if aux is None:
            return 0.0
        if self.aux_loss_coef is None:
            raise RuntimeError(
                "dft_mm: the model returned a router aux_loss but has no router_aux_loss_coef; set moe_aux_loss_coef."
            )
        return self.aux_loss_coef * aux.to(device)

    @contextmanager
    def steps_named(self):
        """Re-raise a non-finite loss error with the training step in its message."""
        try:
            yield
        except NonFiniteLogitsError as err:
            raise NonFiniteLogitsError(err.count, err.total, f"training step {self.step_of()}") from None

    @contextmanager
    def forward(self, inputs: dict, num_items_in_batch, *, fused: bool, segments: torch.Tensor | None,
                loss_scale: float | None = None):
        """Context of one model forward: the batch's sample ids; the reference's pass (ASFT);
        the fused head armed when ``fused`` (training, or loss-only evaluation) and the batch
        has labels, with the fp16 loss scaler's current ``loss_scale`` when there is one."""
        self.segments = segments
        use_head = self.fused is not None and fused and inputs.get("labels") is not None
        try:
            reference = None
            if self.reference is not None and inputs.get("labels") is not None:
                reference = self.reference.run(inputs, capture=use_head)
                self.ref_logits = None if use_head else reference
            if not use_head:
                yield
                return
            with self.fused.armed(inputs["labels"], num_items_in_batch, segments, loss_scale, reference), self.steps_named():
                yield
        finally:
            self.segments, self.ref_logits = None, None
