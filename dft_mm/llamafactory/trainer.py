"""The SFT trainer hook: routes LLaMA-Factory's SFT loss through :mod:`dft_mm.losses`.

``make_trainer_class(CustomSeq2SeqTrainer)`` returns a subclass that, after the upstream
constructor, installs :class:`TrainerObjective` as the HF Trainer's ``compute_loss_func`` and
adds ``nll`` / ``mean_target_prob`` to every training log.

Normalisation: the objective returns ``sum(weighted token losses) / num_items_in_batch``
where the Trainer's ``num_items_in_batch`` counts supervised tokens over all accumulation
steps and ranks. That holds for text *and* vision-language models (for VLMs LLaMA-Factory
sets ``model_accepts_loss_kwargs=False``, which would otherwise make SFT average per
micro-batch), so SFT (``alpha=0``) and DFT are normalised identically.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from llamafactory.extras import logging

from dft_mm.llamafactory.arguments import DftFinetuningArguments
from dft_mm.llamafactory.fused_head import FusedLMHead, find_lm_head
from dft_mm.llamafactory.metrics import StatsWindow
from dft_mm.losses import NonFiniteLogitsError, dft_loss_and_stats

# a child of the "llamafactory" logger, so it shares its handlers and rank-0 filtering
logger = logging.get_logger("llamafactory.dft_mm")


def uses_liger_forward(model: torch.nn.Module) -> bool:
    """True when Liger-Kernel replaced the model's forward (``use_liger_kernel: true``)."""
    forward = getattr(type(model), "forward", None)
    return getattr(forward, "__module__", "").startswith("liger_kernel")


class TrainerObjective:
    """``compute_loss_func(outputs, labels, num_items_in_batch)`` for the HF Trainer.

    With a :class:`FusedLMHead` armed for the forward, the loss was already computed inside
    ``lm_head`` and is taken from there; otherwise it is computed from ``outputs["logits"]``
    ``[B, T, V]`` and ``labels`` ``[B, T]`` (unshifted). Training statistics go to
    ``window`` (only while gradients are enabled, i.e. not in evaluation).
    """

    def __init__(self, trainer, level: str, alpha: float, window: StatsWindow, fused: FusedLMHead | None):
        self.trainer = trainer
        self.level = level
        self.alpha = alpha
        self.window = window
        self.fused = fused

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        result = self.fused.take() if self.fused is not None else None
        if result is None:
            logits = outputs["logits"]
            with self.steps_named():
                result = dft_loss_and_stats(
                    logits,
                    labels.to(logits.device),
                    level=self.level,
                    alpha=self.alpha,
                    num_items_in_batch=num_items_in_batch,
                )
        loss, stats = result
        if torch.is_grad_enabled():
            self.window.add(stats)
        return loss

    @contextmanager
    def steps_named(self):
        """Re-raise a non-finite loss error with the training step in its message."""
        try:
            yield
        except NonFiniteLogitsError as err:
            where = f"training step {self.trainer.state.global_step}"
            raise NonFiniteLogitsError(err.count, err.total, where) from None

    @contextmanager
    def fused_forward(self, model: torch.nn.Module, inputs: dict, num_items_in_batch):
        """Arm the fused head for this training forward (no-op in eval or without labels)."""
        if self.fused is None or not model.training or inputs.get("labels") is None:
            yield
            return
        with self.fused.armed(inputs["labels"], num_items_in_batch), self.steps_named():
            yield


def resolve_fused_head(model: torch.nn.Module, mode: str) -> torch.nn.Linear | None:
    """The model's lm_head for the fused path per ``dft_fused``; logs why not under auto."""
    if mode == "false":
        return None
    head, reason = find_lm_head(model)
    if head is None:
        if mode == "true":
            raise ValueError(f"dft_fused: true, but {reason}; use dft_fused: auto or false.")
        logger.info_rank0(f"dft_mm: fused head off (dft_fused: auto): {reason}; computing the loss from logits.")
    return head


def install_objective(trainer, args: DftFinetuningArguments, window: StatsWindow) -> TrainerObjective | None:
    """Set ``trainer.compute_loss_func`` per the YAML keys; None where upstream stays in charge."""
    if not isinstance(args, DftFinetuningArguments) or args.upstream_loss_active:
        return None
    is_dft = args.sft_loss == "dft"
    alpha = args.dft_alpha if is_dft else 0.0
    model = trainer.accelerator.unwrap_model(trainer.model)
    head = resolve_fused_head(model, args.dft_fused)
    if head is None and uses_liger_forward(model):
        if not is_dft:
            logger.info_rank0("dft_mm: sft_loss nll with use_liger_kernel and no fused head: keeping Liger's loss.")
            return None
        logger.warning_rank0(
            "dft_mm: DFT under use_liger_kernel without the fused head computes the loss from full "
            "[batch, seq, vocab] logits; expect the memory of plain HF. Set dft_fused: auto."
        )
    fused = FusedLMHead(head, args.dft_level, alpha) if head is not None else None
    objective = TrainerObjective(trainer, args.dft_level, alpha, window, fused)
    trainer.compute_loss_func = objective
    logger.info_rank0(
        f"dft_mm: sft_loss={args.sft_loss}"
        + (f" level={args.dft_level} alpha={args.dft_alpha}" if is_dft else "")
        + (", fused lm_head+loss" if fused else ", loss from logits")
        + ", normalised by supervised tokens across accumulation steps and ranks."
    )
    return objective


def make_trainer_class(base: type) -> type:
    """Subclass LLaMA-Factory's ``CustomSeq2SeqTrainer`` with the dft_mm objective and metrics."""

    class DftSeq2SeqTrainer(base):
        def __init__(self, finetuning_args, *args, **kwargs):
            super().__init__(finetuning_args, *args, **kwargs)
            self.dft_window = StatsWindow()
            self.dft_objective = install_objective(self, finetuning_args, self.dft_window)

        def compute_loss(self, model, inputs, *args, **kwargs):
            if self.dft_objective is None:
                return super().compute_loss(model, inputs, *args, **kwargs)
            num_items_in_batch = kwargs.get("num_items_in_batch", args[1] if len(args) > 1 else None)
            with self.dft_objective.fused_forward(model, inputs, num_items_in_batch):
                return super().compute_loss(model, inputs, *args, **kwargs)

        def log(self, logs: dict[str, float], *args, **kwargs) -> None:
            if "loss" in logs and self.dft_objective is not None:
                logs.update(self.dft_window.flush(self.args.device))
            super().log(logs, *args, **kwargs)

    DftSeq2SeqTrainer.__qualname__ = DftSeq2SeqTrainer.__name__ = base.__name__
    DftSeq2SeqTrainer.__module__ = base.__module__
    return DftSeq2SeqTrainer
