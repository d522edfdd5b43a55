"""``FinetuningArguments`` with the dft_mm loss keys, validated when the YAML is parsed.

YAML keys (all optional; with none of them, nor upstream's ``use_dft_loss``, the run is
exactly LLaMA-Factory's own)::

    sft_loss: dft            # nll | dft: the SFT objective, served by dft_mm
    dft_level: token         # token (default) | sentence | geomean      (sft_loss: dft only)
    dft_alpha: 1.0           # >= 0; weight = sg(p)^alpha (0 = SFT, 1 = DFT) (sft_loss: dft only)
    dft_fused: auto          # auto (default) | true | false: fused lm_head+loss head
    dft_fused_backend: auto  # auto (default: chunked torch) | torch | triton (CUDA)

Upstream's ``use_dft_loss: true`` means ``sft_loss: dft``; it is served by dft_mm.
This module only knows LLaMA-Factory's argument class; the import hook swaps it in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llamafactory.extras.misc import is_env_enabled
from llamafactory.hparams.finetuning_args import FinetuningArguments

from dft_mm.losses import LEVELS

SFT_LOSSES = ("nll", "dft")
FUSED_MODES = ("auto", "true", "false")
FUSED_BACKENDS = ("auto", "torch", "triton")
DFT_ONLY_KEYS = ("dft_level", "dft_alpha")
HEAD_KEYS = ("dft_fused", "dft_fused_backend")
LOSS_KEYS = ("sft_loss", *DFT_ONLY_KEYS, *HEAD_KEYS)  # every dft_mm key


def _as_fused_mode(value) -> str:
    """YAML gives booleans for ``true``/``false``; the command line and the web UI give strings."""
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


def _unserved_path() -> str | None:
    """The LLaMA-Factory SFT path in use that never builds the SFT trainer dft_mm patches."""
    if is_env_enabled("USE_MCA"):
        return "USE_MCA=1 (Megatron-Core adapter training)"
    return None


@dataclass
class DftFinetuningArguments(FinetuningArguments):
    """LLaMA-Factory's finetuning arguments plus the dft_mm loss keys.

    ``dft_mm_active`` is True when any dft_mm key (or ``use_dft_loss``) was given; then the
    keys hold their resolved values (``sft_loss`` "nll"/"dft", level, alpha, modes).
    """

    sft_loss: str | None = field(
        default=None,
        metadata={"help": "SFT objective served by dft_mm: 'nll' (token-normalised cross-entropy) or 'dft' (Dynamic "
                          "Fine-Tuning). Unset: LLaMA-Factory's own objective, untouched."},
    )
    dft_level: str | None = field(
        default=None,
        metadata={"help": "DFT weight (sft_loss: dft): 'token' (p_t, default), 'sentence' (prod p_t) or 'geomean'."},
    )
    dft_alpha: float | None = field(
        default=None,
        metadata={"help": "DFT weight exponent >= 0 (sft_loss: dft): weight = sg(p)^alpha; 0 is SFT, 1 (default) is DFT."},
    )
    dft_fused: str | None = field(
        default=None,
        metadata={"help": "Fused lm_head+loss that never materialises logits: auto (default), true or false."},
    )
    dft_fused_backend: str | None = field(
        default=None,
        metadata={"help": "Fused head backend: auto (default, the chunked torch one), torch, or triton (CUDA)."},
    )

    def __post_init__(self):
        super().__post_init__()
        given = [key for key in LOSS_KEYS if getattr(self, key) is not None]
        self.dft_mm_active = bool(given) or bool(self.use_dft_loss)
        if not self.dft_mm_active:
            return
        self._resolve_sft_loss(given)
        self._check_other_losses_and_paths()
        self.dft_level = "token" if self.dft_level is None else str(self.dft_level)
        if self.dft_level not in LEVELS:
            raise ValueError(f"dft_level must be one of {', '.join(LEVELS)}; got {self.dft_level!r}.")
        self.dft_alpha = 1.0 if self.dft_alpha is None else _as_alpha(self.dft_alpha)
        self.dft_fused = "auto" if self.dft_fused is None else _as_fused_mode(self.dft_fused)
        self.dft_fused_backend = "auto" if self.dft_fused_backend is None else str(self.dft_fused_backend).lower()
        if self.dft_fused_backend not in FUSED_BACKENDS:
            raise ValueError(f"dft_fused_backend must be one of {', '.join(FUSED_BACKENDS)}; got {self.dft_fused_backend!r}.")

    def _resolve_sft_loss(self, given: list[str]) -> None:
        """Fold upstream's ``use_dft_loss`` into ``sft_loss``; every other key needs ``sft_loss``."""
        if self.sft_loss is not None and self.sft_loss not in SFT_LOSSES:
            raise ValueError(f"sft_loss must be 'nll' or 'dft'; got {self.sft_loss!r}. Example: `sft_loss: dft`.")
        if self.use_dft_loss:
            if self.sft_loss == "nll":
                raise ValueError("use_dft_loss: true conflicts with sft_loss: nll; keep one of them.")
            self.sft_loss = "dft"
            # dft_mm serves DFT; keep upstream's own DFT path from also being installed.
            self.use_dft_loss = False
        if self.sft_loss is None:
            raise ValueError(
                f"{', '.join(given)} only take effect with an sft_loss; add `sft_loss: dft` (or `sft_loss: nll` for "
                "dft_mm's token-normalised SFT), or remove them to train with LLaMA-Factory's own objective."
            )
        if self.sft_loss == "nll":
            extra = [key for key in DFT_ONLY_KEYS if key in given]
            if extra:
                raise ValueError(
                    f"{' / '.join(extra)} only apply with sft_loss: dft; add `sft_loss: dft` or remove them."
                )

    def _check_other_losses_and_paths(self) -> None:
        for other in ("use_eaft_loss", "use_asft_loss"):
            if getattr(self, other):
                raise ValueError(f"sft_loss: {self.sft_loss} conflicts with {other}: true; these losses cannot be combined.")
        if self.stage != "sft":
            raise ValueError(f"sft_loss: {self.sft_loss} applies to stage: sft only; got stage: {self.stage}.")
        path = "use_hyper_parallel: true (HyperParallel training)" if self.use_hyper_parallel else _unserved_path()
        if path:
            raise ValueError(
                f"sft_loss: {self.sft_loss} is not served with {path}: that path trains with its own trainer, which "
                "dft_mm does not patch, so the loss would silently be plain SFT. Use the default SFT trainer "
                "(torchrun, DeepSpeed or FSDP) or remove the dft_mm keys."
            )
