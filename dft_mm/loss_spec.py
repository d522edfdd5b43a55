"""The SFT objectives dft_mm serves, as one small torch-free description: :class:`LossSpec`.

Every objective is a per-token weighted negative log-likelihood, optionally plus a KL term to a
frozen reference model, normalised by the number of supervised tokens ``N``::

    L = (1 / N) * sum_t [ w_t * (-log p_t)  +  kl_coef * KL(pi_ref(.|t) || pi_theta(.|t)) ]

================  ====================================================  =====================
objective         weight ``w_t`` (no gradient through it)                KL term
================  ====================================================  =====================
``nll``           1 (plain SFT)                                          none
``dft``           ``max(sg(p)^alpha, min_weight)`` at ``level``          none
                  (token: ``p_t``; sentence: ``prod p``; geomean:
                  ``exp(mean log p)`` over the sequence)
``asft``          ``sg(p_t)`` (token-level DFT)                          ``kl_coef`` (ASFT,
                                                                         arXiv 2509.23753)
``eaft``          ``(H_top20(t) / 3) ^ entropy_alpha``: the entropy of   none
                  the softmax over the 20 largest logits (EAFT,
                  arXiv 2601.02151)
================  ====================================================  =====================

It is also the one definition of the loss vocabulary (objectives, levels, the YAML key names).
Nothing here imports torch: the YAML parser, LlamaBoard and ``dft-mm bench --help`` use it
to validate and describe objectives; :mod:`dft_mm.losses` and :mod:`dft_mm.fused` compute them.

Example::

    >>> spec = LossSpec.dft(level="sentence", alpha=1.0, min_weight=0.05)
    >>> spec.needs_sequences, spec.needs_reference
    (True, False)
    >>> LossSpec.asft(kl_coef=0.1).describe()
    'asft kl_coef=0.1'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OBJECTIVES = ("nll", "dft", "asft", "eaft")  # the values of the YAML key sft_loss
LEVELS = ("token", "sentence", "geomean")  # dft_level
TRITON_OBJECTIVES = ("nll", "dft")  # ASFT's reference softmax and EAFT's top-20 entropy: torch backend only
# the YAML keys dft_mm adds to LLaMA-Factory's and the values its head keys take
FUSED_MODES = ("auto", "true", "false")  # dft_fused
FUSED_BACKENDS = ("auto", "torch", "triton")  # dft_fused_backend
DFT_ONLY_KEYS = ("dft_level", "dft_alpha", "dft_min_weight")  # meaningful with sft_loss: dft only
HEAD_KEYS = ("dft_fused", "dft_fused_backend")
LOSS_KEYS = ("sft_loss", *DFT_ONLY_KEYS, *HEAD_KEYS)  # every dft_mm key
# LLaMA-Factory's own switches, each meaning one sft_loss
UPSTREAM_FLAGS = {"use_dft_loss": "dft", "use_asft_loss": "asft", "use_eaft_loss": "eaft"}
# EAFT's entropy: over the renormalised softmax of the TOP_K largest logits, divided by
# ENTROPY_SCALE (about ln 20, so the weight stays below 1); the values LLaMA-Factory 0.9.5 uses.
EAFT_TOP_K = 20
EAFT_ENTROPY_SCALE = 3.0


def checked_number(value, name: str, *, low: float = 0.0, high: float = math.inf, hint: str = "") -> float:
    """``value`` as a finite float in ``[low, high]``, else a ValueError naming ``name`` (a YAML key
    or an argument) with ``hint`` after the bound."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not low <= number <= high:
        bound = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number {bound}{hint}; got {value!r}.")
    return number


@dataclass(frozen=True)
class LossSpec:
    """One SFT objective and its knobs (see the module docstring); validated on creation.

    Build it with :meth:`nll`, :meth:`dft`, :meth:`asft` or :meth:`eaft` rather than by field.
    """

    objective: str = "dft"
    level: str = "token"  # dft only
    alpha: float = 1.0  # exponent of sg(p): 0 for nll and eaft, 1 for asft
    min_weight: float = 0.0  # dft only: floor of the weight (0 = off)
    kl_coef: float = 0.0  # asft only: coefficient of the KL term (LLaMA-Factory's asft_alpha)
    entropy_alpha: float = 0.0  # eaft only: exponent of the entropy weight (LLaMA-Factory's eaft_alpha)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}.")
        if self.level not in LEVELS:
            raise ValueError(f"dft level must be one of {', '.join(LEVELS)}; got {self.level!r}.")
        checked_number(self.alpha, "dft alpha", hint=" (0 = SFT, 1 = DFT)")
        checked_number(self.min_weight, "dft_min_weight", high=1.0)
        checked_number(self.kl_coef, "asft_alpha")
        checked_number(self.entropy_alpha, "eaft_alpha")
        if self.objective != "dft" and (self.level != "token" or self.min_weight):
            raise ValueError(f"a level and a weight floor apply to dft only, not {self.objective}.")
        if self.objective != "asft" and self.kl_coef:
            raise ValueError(f"kl_coef (asft_alpha) applies to asft only, not {self.objective}.")
        if self.objective != "eaft" and self.entropy_alpha:
            raise ValueError(f"entropy_alpha (eaft_alpha) applies to eaft only, not {self.objective}.")
        fixed_alpha = {"nll": 0.0, "asft": 1.0, "eaft": 0.0}.get(self.objective)
        if fixed_alpha is not None and self.alpha != fixed_alpha:
            raise ValueError(f"{self.objective} weighs sg(p) with alpha = {fixed_alpha:g}; use LossSpec.{self.objective}().")

    @classmethod
    def nll(cls) -> "LossSpec":
        return cls("nll", alpha=0.0)

    @classmethod
    def dft(cls, level: str = "token", alpha: float = 1.0, min_weight: float = 0.0) -> "LossSpec":
        return cls("dft", level=level, alpha=float(alpha), min_weight=float(min_weight))

    @classmethod
    def asft(cls, kl_coef: float = 0.1) -> "LossSpec":
        return cls("asft", alpha=1.0, kl_coef=float(kl_coef))

    @classmethod
    def eaft(cls, entropy_alpha: float = 1.0) -> "LossSpec":
        return cls("eaft", alpha=0.0, entropy_alpha=float(entropy_alpha))

    @property
    def needs_sequences(self) -> bool:
        """Whether a token's weight depends on its whole sequence (two passes; packed rows need ids)."""
        return self.level != "token" and self.alpha != 0

    @property
    def needs_reference(self) -> bool:
        """Whether the loss has the KL term to a frozen reference model (ASFT)."""
        return self.objective == "asft"

    @property
    def weights_from_entropy(self) -> bool:
        return self.objective == "eaft"

    def describe(self) -> str:
        """A short human-readable form for logs, e.g. ``dft level=token alpha=1``."""
        if self.objective == "dft":
            floor = f" min_weight={self.min_weight:g}" if self.min_weight else ""
            return f"dft level={self.level} alpha={self.alpha:g}{floor}"
        if self.objective == "asft":
            return f"asft kl_coef={self.kl_coef:g}"
        if self.objective == "eaft":
            return f"eaft entropy_alpha={self.entropy_alpha:g}"
        return "nll"
