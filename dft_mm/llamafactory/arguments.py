"""``FinetuningArguments`` with the dft_mm loss keys, validated when the YAML is parsed.

YAML keys (all optional; with none of them, nor upstream's ``use_dft_loss`` /
``use_asft_loss`` / ``use_eaft_loss``, the run is exactly LLaMA-Factory's own)::

    sft_loss: dft            # nll | dft | asft | eaft: the SFT objective, served by dft_mm
    dft_level: token         # token (default) | sentence | geomean      (sft_loss: dft only)
    dft_alpha: 1.0           # >= 0; weight = sg(p)^alpha (0 = SFT, 1 = DFT) (sft_loss: dft only)
    dft_min_weight: 0.0      # in [0, 1]; weight = max(sg(p)^alpha, floor) (sft_loss: dft only)
    asft_alpha: 0.1          # LLaMA-Factory's key: the KL coefficient      (sft_loss: asft)
    eaft_alpha: 1.0          # LLaMA-Factory's key: the entropy exponent    (sft_loss: eaft)
    dft_fused: auto          # auto (default) | true | false: fused lm_head+loss head
    dft_fused_backend: auto  # auto (default: chunked torch) | torch | triton (CUDA; nll and dft)

Upstream's ``use_dft_loss`` / ``use_asft_loss`` / ``use_eaft_loss: true`` mean ``sft_loss:
dft`` / ``asft`` / ``eaft``; dft_mm serves them (fused, token-normalised). Combinations that
make no sense are errors here, at parse time, naming the fix (LLaMA-Factory alone silently
uses the first of several ``use_*_loss`` flags).
This module only knows LLaMA-Factory's argument class; the import hook swaps it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llamafactory.extras.misc import is_env_enabled
from llamafactory.hparams.finetuning_args import FinetuningArguments

from dft_mm.llamafactory.upstream import SUPPORTED_VERSION, unsupported
from dft_mm.loss_spec import (
    DFT_ONLY_KEYS,
    FUSED_BACKENDS,
    FUSED_MODES,
    LEVELS,
    LOSS_KEYS,
    OBJECTIVES,
    TRITON_OBJECTIVES,
    UPSTREAM_FLAGS,
    LossSpec,
    checked_number,
)



def _as_fused_mode(value) -> str:
    """YAML gives booleans for ``true``/``false``; the command line and the web UI give strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    mode = str(value).strip().lower()
    if mode not in FUSED_MODES:
        raise ValueError(f"dft_fused must be one of auto, true, false; got {value!r}.")
    return mode


def _unserved_path() -> str | None:
    """The LLaMA-Factory SFT path in use that never builds the SFT trainer dft_mm patches."""
    if is_env_enabled("USE_MCA"):
        return "USE_MCA=1 (Megatron-Core adapter training)"
    return None


@dataclass
class DftFinetuningArguments(FinetuningArguments):
    """LLaMA-Factory's finetuning arguments plus the dft_mm loss keys.

    ``dft_mm_active`` is True when any dft_mm key (or a ``use_*_loss`` flag) was given; then
    the keys hold their resolved values, ``loss_spec`` is the objective
    (:class:`~dft_mm.loss_spec.LossSpec`) and ``dft_upstream_flag`` names the ``use_*_loss``
    flag it came from (None when ``sft_loss`` was given). LLaMA-Factory's own loss switches
    are then off, except ``use_asft_loss``, which stays on for ASFT so that LLaMA-Factory
    builds and places its reference model; the trainer hook serves the loss.
    """

    sft_loss: str | None = field(
        default=None,
        metadata={"help": "SFT objective served by dft_mm: 'nll' (token-normalised cross-entropy), 'dft' (Dynamic "
                          "Fine-Tuning), 'asft' (DFT + asft_alpha x KL to the starting model) or 'eaft' (cross-entropy "
                          "x top-20 entropy ^ eaft_alpha). Unset: LLaMA-Factory's own objective, untouched."},
    )
    dft_level: str | None = field(
        default=None,
        metadata={"help": "DFT weight (sft_loss: dft): 'token' (p_t, default), 'sentence' (prod p_t) or 'geomean'."},
    )
    dft_alpha: float | None = field(
        default=None,
        metadata={"help": "DFT weight exponent >= 0 (sft_loss: dft): weight = sg(p)^alpha; 0 is SFT, 1 (default) is DFT."},
    )
    dft_min_weight: float | None = field(
        default=None,
        metadata={"help": "Floor of the DFT weight in [0, 1] (sft_loss: dft): weight = max(sg(p)^alpha, floor); "
                          "0 (default) is no floor."},
    )
    dft_fused: str | None = field(
        default=None,
        metadata={"help": "Fused lm_head+loss that never materialises logits: auto (default), true or false."},
    )
    dft_fused_backend: str | None = field(
        default=None,
        metadata={"help": "Fused head backend: auto (default, the chunked torch one), torch, or triton (CUDA; nll, dft)."},
    )

    def __post_init__(self):
        super().__post_init__()
        given = [key for key in LOSS_KEYS if getattr(self, key) is not None]
        flags = [flag for flag in UPSTREAM_FLAGS if getattr(self, flag)]
        self.dft_mm_active = bool(given or flags)
        self.dft_upstream_flag = None
        if not self.dft_mm_active:
            return
        problem = unsupported()
        if problem:
            raise ValueError(
                f"{problem}: dft_mm refuses {', '.join([*given, *flags])} rather than patch part of it. Install "
                f"llamafactory=={SUPPORTED_VERSION}, or remove these keys to train with LLaMA-Factory alone "
                "(with DFT_MM_DISABLE=1 its own use_*_loss flags run)."
            )
        self._resolve_sft_loss(given, flags)
        self._check_stage_and_paths()
        self.dft_level = "token" if self.dft_level is None else str(self.dft_level)
        if self.dft_level not in LEVELS:
            raise ValueError(f"dft_level must be one of {', '.join(LEVELS)}; got {self.dft_level!r}.")
        self.dft_alpha = 1.0 if self.dft_alpha is None else checked_number(self.dft_alpha, "dft_alpha", hint=" (0 = SFT, 1 = DFT)")
        self.dft_min_weight = 0.0 if self.dft_min_weight is None else checked_number(self.dft_min_weight, "dft_min_weight", high=1)
        self.dft_fused = "auto" if self.dft_fused is None else _as_fused_mode(self.dft_fused)
        self.dft_fused_backend = "auto" if self.dft_fused_backend is None else str(self.dft_fused_backend).lower()
        if self.dft_fused_backend not in FUSED_BACKENDS:
            raise ValueError(f"dft_fused_backend must be one of {', '.join(FUSED_BACKENDS)}; got {self.dft_fused_backend!r}.")
        if self.dft_fused_backend == "triton" and self.sft_loss not in TRITON_OBJECTIVES:
            raise ValueError(
                f"dft_fused_backend: triton serves sft_loss {' and '.join(TRITON_OBJECTIVES)}; sft_loss: {self.sft_loss} runs its "
                "per-chunk work (reference softmax, top-20 entropy) in the torch backend: use dft_fused_backend: auto or torch."
            )
        self.loss_spec = self._spec()

    def _spec(self) -> LossSpec:
        if self.sft_loss == "dft":
            return LossSpec.dft(self.dft_level, self.dft_alpha, self.dft_min_weight)
        if self.sft_loss == "asft":
            return LossSpec.asft(checked_number(self.asft_alpha, "asft_alpha", hint=" (the KL coefficient)"))
        if self.sft_loss == "eaft":
            return LossSpec.eaft(checked_number(self.eaft_alpha, "eaft_alpha", hint=" (the entropy exponent)"))
        return LossSpec.nll()

    def _resolve_sft_loss(self, given: list[str], flags: list[str]) -> None:
        """Fold upstream's ``use_*_loss`` flags into ``sft_loss``; every other key needs ``sft_loss``."""
        if self.sft_loss is not None and self.sft_loss not in OBJECTIVES:
            raise ValueError(f"sft_loss must be one of {', '.join(OBJECTIVES)}; got {self.sft_loss!r}. Example: `sft_loss: dft`.")
        if len(flags) > 1:
            raise ValueError(
                f"{' and '.join(f'{flag}: true' for flag in flags)} select different losses (LLaMA-Factory alone would "
                f"silently use {flags[0]}); keep one, or use sft_loss: {' | '.join(OBJECTIVES)}."
            )
        if flags:
            implied = UPSTREAM_FLAGS[flags[0]]
            if self.sft_loss not in (None, implied):
                raise ValueError(
                    f"sft_loss: {self.sft_loss} conflicts with {flags[0]}: true (which means sft_loss: {implied}); keep one of them."
                )
            self.sft_loss, self.dft_upstream_flag = implied, flags[0]
        if self.sft_loss is None:
            raise ValueError(
                f"{', '.join(given)} only take effect with an sft_loss; add `sft_loss: dft` (or `sft_loss: nll` for "
                "dft_mm's token-normalised SFT), or remove them to train with LLaMA-Factory's own objective."
            )
        if self.sft_loss != "dft":
            extra = [key for key in DFT_ONLY_KEYS if key in given]
            if extra:
                raise ValueError(
                    f"{' / '.join(extra)} only apply with sft_loss: dft (this run has sft_loss: {self.sft_loss}); "
                    "use `sft_loss: dft` or remove them."
                )
        # dft_mm serves the loss; LLaMA-Factory keeps only its reference model for ASFT
        self.use_dft_loss, self.use_eaft_loss = False, False
        self.use_asft_loss = self.sft_loss == "asft"

    def _check_stage_and_paths(self) -> None:
        if self.stage != "sft":
            raise ValueError(
                f"sft_loss: {self.sft_loss} applies to stage: sft only; got stage: {self.stage}. Remove the dft_mm keys "
                "(and use_*_loss flags) or use stage: sft."
            )
        path = "use_hyper_parallel: true (HyperParallel training)" if self.use_hyper_parallel else _unserved_path()
        if path:
            raise ValueError(
                f"sft_loss: {self.sft_loss} is not served with {path}: that path trains with its own trainer, which "
                "dft_mm does not patch, so the loss would silently be plain SFT. Use the default SFT trainer "
                "(torchrun, DeepSpeed or FSDP) or remove the dft_mm keys."
            )
