"""Element-wise maps some models apply to their logits after ``lm_head``.

Gemma 2/3 soft-cap them (``c * tanh(z / c)``), Cohere multiplies them by ``logit_scale``,
Granite divides them by ``logits_scaling``. The fused head never returns logits to the
model, so it replays the model's map itself, with the same torch ops in the same dtype as the
model's forward would run them (so the fused and unfused losses agree to rounding).

Example::

    >>> import torch
    >>> capped = LogitTransform.softcap(30.0)
    >>> capped(torch.tensor([0.0, 300.0]))
    tensor([ 0.0000, 29.9999])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OPS = ("mul", "div", "softcap")


@dataclass(frozen=True)
class LogitTransform:
    """A sequence of ``(op, constant)`` steps, ``op`` in :data:`OPS`, applied in order."""

    steps: tuple[tuple[str, float], ...]

    def __post_init__(self):
        for op, constant in self.steps:
            if op not in OPS:
                raise ValueError(f"logit transform op must be one of {', '.join(OPS)}; got {op!r}.")
            if not constant or constant != constant:
                raise ValueError(f"logit transform {op} needs a finite non-zero constant; got {constant!r}.")

    @classmethod
    def softcap(cls, cap: float) -> "LogitTransform":
        return cls((("softcap", float(cap)),))

    @classmethod
    def scale(cls, factor: float) -> "LogitTransform":
        return cls((("mul", float(factor)),))

    @classmethod
    def divide(cls, divisor: float) -> "LogitTransform":
        return cls((("div", float(divisor)),))

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the steps to ``logits`` (any shape, any float dtype); differentiable."""
        for op, constant in self.steps:
            if op == "mul":
                logits = logits * constant
            elif op == "div":
                logits = logits / constant
            else:  # the three ops of Gemma's soft-capping, in its order
                logits = torch.tanh(logits / constant) * constant
        return logits

    def describe(self) -> str:
        return ", ".join(f"{op} {constant:g}" for op, constant in self.steps) or "identity"
