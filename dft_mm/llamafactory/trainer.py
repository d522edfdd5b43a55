"""The SFT trainer hook: routes LLaMA-Factory's SFT loss through :mod:`dft_mm.losses`.

``make_trainer_class(CustomSeq2SeqTrainer)`` returns a subclass that, when the run asked for
dft_mm (any dft_mm key or a ``use_*_loss`` flag; see :mod:`dft_mm.llamafactory.arguments`),
installs :class:`~dft_mm.llamafactory.objective.TrainerObjective` as the HF Trainer's
``compute_loss_func``, arms the fused head around each training forward (and each loss-only
evaluation forward), runs ASFT's reference beside it, and adds the metrics of
:mod:`dft_mm.llamafactory.metrics` to every training log. A run without dft_mm keys is left
entirely to LLaMA-Factory.
"""

from __future__ import annotations

import torch
from llamafactory.extras import logging

from dft_mm.llamafactory.fused_head import FusedLMHead
from dft_mm.llamafactory.head_support import HeadPlan, base_model, plan_fused_head
from dft_mm.llamafactory.metrics import StatsWindow
from dft_mm.llamafactory.objective import TrainerObjective
from dft_mm.llamafactory.packing import packing_of, segment_ids
from dft_mm.llamafactory.reference import ReferencePass

# a child of the "llamafactory" logger, so it shares its handlers and rank-0 filtering
logger = logging.get_logger("llamafactory.dft_mm")


def uses_liger_forward(model: torch.nn.Module) -> bool:
    """True when Liger-Kernel replaced the model's forward (``use_liger_kernel: true``)."""
    forward = getattr(type(base_model(model)), "forward", None)
    return getattr(forward, "__module__", "").startswith("liger_kernel")


def resolve_head_plan(model: torch.nn.Module, mode: str, reference: ReferencePass | None = None) -> HeadPlan:
    """The fused-head plan per ``dft_fused``; logs why not under auto, raises under true.
    With ASFT's ``reference``, its head must be capturable too."""
    if mode == "false":
        return HeadPlan(None, reason="dft_fused: false")
    plan = plan_fused_head(model)
    if plan.head is not None and reference is not None and not reference.can_capture:
        plan = HeadPlan(None, reason=f"the reference model's head cannot be fused ({reference.plan.reason})")
    if plan.head is None:
        if mode == "true":
            raise ValueError(f"dft_fused: true, but {plan.reason}; use dft_fused: auto or false.")
        logger.info_rank0(f"dft_mm: fused head off (dft_fused: auto): {plan.reason}; computing the loss from logits.")
    return plan


def current_loss_scale(trainer) -> float | None:
    """The fp16 loss scale the coming backward will use: accelerate's GradScaler, or the
    DeepSpeed engine's loss scaler; None without fp16 loss scaling."""
    if not trainer.args.fp16:
        return None
    scaler = getattr(trainer.accelerator, "scaler", None)
    if scaler is not None and scaler.is_enabled():
        return float(scaler.get_scale())
    optimizer = getattr(getattr(trainer, "deepspeed", None), "optimizer", None)
    scale = getattr(optimizer, "loss_scale", None)
    return float(scale) if isinstance(scale, (int, float)) else None


def _dataset_packing(trainer) -> str | None:
    datasets = [trainer.train_dataset, trainer.eval_dataset]
    if isinstance(trainer.eval_dataset, dict):
        datasets[1:] = list(trainer.eval_dataset.values())
    return next((kind for kind in map(packing_of, datasets) if kind), None)


def _loss_details(args) -> str:
    if args.sft_loss == "dft":
        return f" level={args.dft_level} alpha={args.dft_alpha}" + (f" min_weight={args.dft_min_weight}" if args.dft_min_weight else "")
    return {"asft": f" asft_alpha={args.loss_spec.kl_coef}", "eaft": f" eaft_alpha={args.loss_spec.entropy_alpha}"}.get(args.sft_loss, "")


def _describe(args, fused: FusedLMHead | None, packing: str | None, reference: ReferencePass | None) -> str:
    parts = [f"dft_mm: sft_loss={args.sft_loss}{_loss_details(args)}"]
    if args.dft_upstream_flag:
        parts.append(f"{args.dft_upstream_flag}: true served by dft_mm")
    if reference is not None:
        parts.append(reference.describe())
    if fused is None:
        parts.append("loss from logits")
    else:
        parts.append(f"fused lm_head+loss ({fused.backend} backend)")
        if fused.transform is not None:
            parts.append(f"replaying the model's logit map ({fused.transform.describe()})")
    if packing:
        parts.append(f"one weight per packed sample ({packing})")
    parts.append("normalised by supervised tokens across accumulation steps and ranks.")
    return ", ".join(parts)


def build_reference(trainer, model: torch.nn.Module) -> ReferencePass:
    """ASFT's reference: LLaMA-Factory's ``trainer.ref_model``, else the policy with its adapters disabled."""
    sharded = bool(getattr(trainer, "is_fsdp_enabled", False)) or _is_zero3(trainer)
    return ReferencePass(model, trainer.ref_model, sharded=sharded, unwrap=trainer.accelerator.unwrap_model)


def _is_zero3(trainer) -> bool:
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def install_objective(trainer, args, window: StatsWindow) -> TrainerObjective | None:
    """Set ``trainer.compute_loss_func`` per the YAML keys; None where LLaMA-Factory stays in charge."""
    if not getattr(args, "dft_mm_active", False):
        return None
    spec = args.loss_spec
    model = trainer.accelerator.unwrap_model(trainer.model)
    reference = build_reference(trainer, model) if spec.needs_reference else None
    plan = resolve_head_plan(model, args.dft_fused, reference)
    if plan.head is None and uses_liger_forward(model):
        if spec.objective == "nll":
            logger.info_rank0("dft_mm: sft_loss nll with use_liger_kernel and no fused head: keeping Liger's loss.")
            return None
        logger.warning_rank0(
            f"dft_mm: {spec.objective} under use_liger_kernel without the fused head computes the loss from full "
            "[batch, seq, vocab] logits; expect the memory of plain HF. Set dft_fused: auto."
        )
    fused = None
    if plan.head is not None:
        fused = FusedLMHead(plan.head, spec, backend=args.dft_fused_backend, transform=plan.transform)
    trainer.dft_packing = _dataset_packing(trainer) if spec.needs_sequences else None
    coef = getattr(base_model(model), "router_aux_loss_coef", None)
    objective = TrainerObjective(spec, window, fused, coef, lambda: trainer.state.global_step, reference)
    trainer.compute_loss_func = objective
    logger.info_rank0(_describe(args, fused, trainer.dft_packing, reference))
    return objective


def make_trainer_class(base: type) -> type:
    """Subclass LLaMA-Factory's ``CustomSeq2SeqTrainer`` with the dft_mm objective and metrics."""

    class DftSeq2SeqTrainer(base):
        def __init__(self, finetuning_args, *args, **kwargs):
            super().__init__(finetuning_args, *args, **kwargs)
            active = getattr(finetuning_args, "dft_mm_active", False)
            self.dft_window = StatsWindow(finetuning_args.loss_spec) if active else None
            self.dft_packing = None
            self.dft_objective = install_objective(self, finetuning_args, self.dft_window)
            self._dft_loss_only_eval = False
            self._dft_eval_logged = False
            self._dft_underflow_warned = False

        def compute_loss(self, model, inputs, *args, **kwargs):
            if self.dft_objective is None:
                return super().compute_loss(model, inputs, *args, **kwargs)
            num_items_in_batch = kwargs.get("num_items_in_batch", args[1] if len(args) > 1 else None)
            segments = segment_ids(inputs, self.dft_packing) if self.dft_packing else None
            fused = self._fused_forward(model)
            needs_scale = fused and model.training and self.dft_objective.fused is not None
            loss_scale = current_loss_scale(self) if needs_scale else None  # only the fused head uses it
            # ASFT: the HF Trainer's compute_loss, since LLaMA-Factory's would run its own reference and loss
            # (use_asft_loss stays on so that LLaMA-Factory builds the reference model; dft_mm runs it)
            compute = super(base, self).compute_loss if self.dft_objective.reference else super().compute_loss
            with self.dft_objective.forward(inputs, num_items_in_batch, fused=fused, segments=segments, loss_scale=loss_scale):
                return compute(model, inputs, *args, **kwargs)

        def _fused_forward(self, model) -> bool:
            """Whether this forward may use the fused head: training, or a loss-only evaluation."""
            if model.training:
                return True
            if self._dft_loss_only_eval and self.dft_objective.fused is not None and not self._dft_eval_logged:
                logger.info_rank0("dft_mm: evaluation loss through the fused head (no [batch, seq, vocab] logits).")
                self._dft_eval_logged = True
            return self._dft_loss_only_eval

        def prediction_step(self, model, inputs, prediction_loss_only, *args, **kwargs):
            # the fused head serves evaluation when only the loss is kept (no logits for metrics)
            self._dft_loss_only_eval = bool(prediction_loss_only) and not self.args.predict_with_generate
            try:
                return super().prediction_step(model, inputs, prediction_loss_only, *args, **kwargs)
            finally:
                self._dft_loss_only_eval = False

        def log(self, logs: dict[str, float], *args, **kwargs) -> None:
            if "loss" in logs and self.dft_objective is not None:
                logs.update(self.dft_window.flush(self.args.device))
                self._warn_underflow(logs.get("weight_underflow", 0.0))
            super().log(logs, *args, **kwargs)

        def _warn_underflow(self, share: float) -> None:
            if share > 0 and not self._dft_underflow_warned:
                self._dft_underflow_warned = True
                logger.warning_rank0(
                    f"dft_mm: {share:.1%} of the sequences since the last log have a sentence-level weight of exactly 0 "
                    "(prod p underflows in fp32 on long sequences): they train with no gradient. Use dft_level: geomean, "
                    "a dft_min_weight, or shorter sequences (logged as weight_underflow; warned once)."
                )

    DftSeq2SeqTrainer.__qualname__ = DftSeq2SeqTrainer.__name__ = base.__name__
    DftSeq2SeqTrainer.__module__ = base.__module__
    return DftSeq2SeqTrainer
