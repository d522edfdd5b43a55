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

import torch
from llamafactory.extras import logging

from dft_mm.llamafactory.arguments import DftFinetuningArguments
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

    ``outputs["logits"]`` ``[B, T, V]`` and ``labels`` ``[B, T]`` are unshifted; training
    statistics go to ``window`` (only while gradients are enabled, i.e. not in evaluation).
    """

    def __init__(self, trainer, level: str, alpha: float, window: StatsWindow):
        self.trainer = trainer
        self.level = level
        self.alpha = alpha
        self.window = window

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"]
        try:
            loss, stats = dft_loss_and_stats(
                logits,
                labels.to(logits.device),
                level=self.level,
                alpha=self.alpha,
                num_items_in_batch=num_items_in_batch,
            )
        except NonFiniteLogitsError as err:
            where = f"training step {self.trainer.state.global_step}"
            raise NonFiniteLogitsError(err.count, err.total, where) from None
        if torch.is_grad_enabled():
            self.window.add(stats)
        return loss


def install_objective(trainer, args: DftFinetuningArguments, window: StatsWindow) -> TrainerObjective | None:
    """Set ``trainer.compute_loss_func`` per the YAML keys; None where upstream stays in charge."""
    if not isinstance(args, DftFinetuningArguments) or args.upstream_loss_active:
        return None
    is_dft = args.sft_loss == "dft"
    liger = uses_liger_forward(trainer.accelerator.unwrap_model(trainer.model))
    if liger and not is_dft:
        logger.info_rank0("dft_mm: sft_loss nll with use_liger_kernel: keeping Liger's fused cross-entropy.")
        return None
    if liger:
        logger.warning_rank0(
            "dft_mm: DFT under use_liger_kernel computes the loss from full [batch, seq, vocab] logits "
            "(Liger's fused cross-entropy cannot apply a per-token weight); expect the memory of plain HF."
        )
    objective = TrainerObjective(trainer, args.dft_level, args.dft_alpha if is_dft else 0.0, window)
    trainer.compute_loss_func = objective
    logger.info_rank0(
        f"dft_mm: sft_loss={args.sft_loss}"
        + (f" level={args.dft_level} alpha={args.dft_alpha}" if is_dft else "")
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

        def log(self, logs: dict[str, float], *args, **kwargs) -> None:
            if "loss" in logs and self.dft_objective is not None:
                logs.update(self.dft_window.flush(self.args.device))
            super().log(logs, *args, **kwargs)

    DftSeq2SeqTrainer.__qualname__ = DftSeq2SeqTrainer.__name__ = base.__name__
    DftSeq2SeqTrainer.__module__ = base.__module__
    return DftSeq2SeqTrainer
