"""ASFT's frozen reference model: which one, and one forward of it per training forward.

* Full (or freeze) fine-tuning: LLaMA-Factory's own reference, ``trainer.ref_model``: the
  starting model loaded a second time by ``create_ref_model`` and placed by the trainer as it
  places every reference (a ZeRO-3 engine sharded like the policy, FSDP, or an accelerate
  evaluation-mode copy), or the model named by the ``ref_model`` key.
* LoRA without ``ref_model``: the policy itself with its adapters disabled, i.e. the base
  model, with no second copy of the weights (LLaMA-Factory 0.9.5 builds no reference there).

The reference sees the whole batch the policy sees, labels aside: images, M-RoPE position
ids, packing masks (LLaMA-Factory's own ASFT passes only ``input_ids`` and
``attention_mask``, so a Qwen2.5-VL reference never sees the image). It runs in evaluation
mode without gradient; with the fused head its ``lm_head`` is captured
(:class:`~dft_mm.llamafactory.fused_head.HeadCapture`), so it stops at its last hidden state.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from dft_mm.fused.reference import ReferenceHead
from dft_mm.llamafactory.fused_head import HeadCapture
from dft_mm.llamafactory.head_support import base_model, plan_fused_head


def _is_zero3(model: torch.nn.Module) -> bool:
    return any(hasattr(param, "ds_id") for param in model.parameters())


@contextmanager
def _evaluation_mode(module: torch.nn.Module):
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class ReferencePass:
    """Runs the reference on a batch: :meth:`run` gives a captured head or its logits.

    Args:
        policy: the unwrapped policy model (a PeftModel under LoRA).
        ref_model: LLaMA-Factory's prepared reference (``trainer.ref_model``), or None to use
            the policy with its adapters disabled.
        sharded: the engine frees gathered weights after each module call (ZeRO-3, FSDP), so a
            captured reference head weight must be copied.
        unwrap: the trainer's ``accelerator.unwrap_model``.
    """

    def __init__(self, policy: torch.nn.Module, ref_model: torch.nn.Module | None, *, sharded: bool, unwrap):
        if ref_model is None and not callable(getattr(policy, "disable_adapter", None)):
            raise ValueError(
                "sft_loss: asft needs a reference model: LLaMA-Factory builds one for full and freeze fine-tuning "
                "(or from the ref_model key); this run has neither a reference nor adapters to disable."
            )
        self.module = ref_model if ref_model is not None else policy
        self.shares_policy = ref_model is None
        unwrapped = unwrap(ref_model) if ref_model is not None else policy
        self.plan = plan_fused_head(unwrapped)
        if self.plan.head is not None:
            self.capture = HeadCapture(self.plan.head, self.plan.transform, copy_weight=sharded and not self.shares_policy,
                                       shares_policy_head=self.shares_policy)
        else:
            self.capture = None
        self.zero3 = _is_zero3(base_model(unwrapped))

    def describe(self) -> str:
        if self.shares_policy:
            return "reference: the base model (LoRA adapters disabled, no second copy)"
        placement = "ZeRO-3 partitioned like the policy" if self.zero3 else "a frozen copy"
        return f"reference: {placement}, seeing the whole batch (images included)"

    @property
    def can_capture(self) -> bool:
        """Whether the reference's head can be captured (else its logits are needed)."""
        return self.capture is not None

    def _mode(self):
        if not self.shares_policy:
            return nullcontext()
        return self.module.disable_adapter()

    def run(self, inputs: dict, *, capture: bool) -> ReferenceHead | torch.Tensor:
        """The reference on ``inputs`` (labels dropped): its captured head when ``capture``
        (needs :attr:`can_capture`), else its ``[B, T, V]`` logits."""
        ref_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        with torch.no_grad(), self._mode(), _evaluation_mode(self.module):
            if not capture:
                return self.module(**ref_inputs)["logits"]
            with self.capture.armed():
                self.module(**ref_inputs)
            return self.capture.take()
