"""``FinetuningArguments`` with the DFT keys, swapped into LLaMA-Factory's parser.

YAML keys (all optional)::

    sft_loss: dft          # nll (default) | dft
    dft_level: token       # token (default) | sentence | geomean
    dft_alpha: 1.0         # >= 0; weight = sg(p)^alpha (0 = SFT, 1 = DFT)
    dft_fused: auto        # auto (default) | true | false: fused linear+loss head

Upstream's ``use_dft_loss: true`` means ``sft_loss: dft``; it is served by dft_mm.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

from llamafactory.hparams.finetuning_args import FinetuningArguments

from dft_mm.llamafactory import pth_hook
from dft_mm.losses import LEVELS

SFT_LOSSES = ("nll", "dft")
FUSED_MODES = ("auto", "true", "false")


def _as_fused_mode(value) -> str:
    """YAML gives booleans for ``true``/``false``; the command line gives strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    mode = str(value).strip().lower()
    if mode not in FUSED_MODES:
        raise ValueError(f"dft_fused must be one of auto, true, false; got {value!r}.")
    return mode


def _as_alpha(value) -> float:
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        alpha = math.nan
    if isinstance(value, bool) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"dft_alpha must be a finite number >= 0 (0 = SFT, 1 = DFT); got {value!r}.")
    return alpha


@dataclass
class DftFinetuningArguments(FinetuningArguments):
    """LLaMA-Factory's finetuning arguments plus the dft_mm loss keys (validated here)."""

    sft_loss: str | None = field(
        default=None,
        metadata={"help": "SFT objective: 'nll' (cross-entropy, default) or 'dft' (Dynamic Fine-Tuning)."},
    )
    dft_level: str = field(
        default="token",
        metadata={"help": "DFT weight: 'token' (p_t), 'sentence' (prod p_t) or 'geomean' (exp mean log p_t)."},
    )
    dft_alpha: float = field(
        default=1.0,
        metadata={"help": "DFT weight exponent >= 0: weight = sg(p)^alpha; 0 is SFT, 1 is DFT."},
    )
    dft_fused: str = field(
        default="auto",
        metadata={"help": "Fused lm_head+loss that never materialises logits: auto, true or false."},
    )

    def __post_init__(self):
        super().__post_init__()
        self._resolve_sft_loss()
        self.dft_level = str(self.dft_level)
        if self.dft_level not in LEVELS:
            raise ValueError(f"dft_level must be one of {', '.join(LEVELS)}; got {self.dft_level!r}.")
        self.dft_alpha = _as_alpha(self.dft_alpha)
        self.dft_fused = _as_fused_mode(self.dft_fused)
        if self.sft_loss == "nll" and (self.dft_level != "token" or self.dft_alpha != 1.0):
            raise ValueError(
                "dft_level / dft_alpha only apply with sft_loss: dft; add `sft_loss: dft` or remove them."
            )

    def _resolve_sft_loss(self) -> None:
        """Fold upstream's ``use_dft_loss`` into ``sft_loss`` and reject conflicting losses."""
        if self.sft_loss is not None and self.sft_loss not in SFT_LOSSES:
            raise ValueError(f"sft_loss must be 'nll' or 'dft'; got {self.sft_loss!r}. Example: `sft_loss: dft`.")
        if self.use_dft_loss:
            if self.sft_loss == "nll":
                raise ValueError("use_dft_loss: true conflicts with sft_loss: nll; keep one of them.")
            self.sft_loss = "dft"
            # dft_mm serves DFT; keep upstream's own DFT path from also being installed.
            self.use_dft_loss = False
        self.sft_loss = self.sft_loss or "nll"
        if self.sft_loss == "dft":
            for other in ("use_eaft_loss", "use_asft_loss"):
                if getattr(self, other):
                    raise ValueError(f"sft_loss: dft conflicts with {other}: true; these losses cannot be combined.")
            if self.stage != "sft":
                raise ValueError(f"sft_loss: dft applies to stage: sft only; got stage: {self.stage}.")

    @property
    def upstream_loss_active(self) -> bool:
        """True when EAFT/ASFT (upstream losses dft_mm leaves alone) are selected."""
        return bool(self.use_eaft_loss or self.use_asft_loss)


# Imported before LLaMA-Factory, this module loads LLaMA-Factory's parser (through the
# hparams package) while it is itself half-initialised, so the hook could not patch it then.
if pth_hook.installed() and "llamafactory.hparams.parser" in sys.modules:
    from dft_mm.llamafactory.patch import patch_parser_module

    patch_parser_module(sys.modules["llamafactory.hparams.parser"])
