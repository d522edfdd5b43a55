"""The demo's experiment as data: its methods and their YAML keys, the three tasks with their
regimes and per-method schedules, the selection protocol's candidates, and the run sizes
(``full``: ``make demo``; ``smoke``: the tests). Every value here was fixed in
``docs/analysis.md`` before it was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VL_PIXELS = {"min_pixels": 28 * 28, "max_pixels": 112 * 112}
NEW_KNOWLEDGE, NOISY = "new knowledge", "noisy demonstrations"
NOISE_FRACTION = 0.4  # fixed in docs/analysis.md before measuring
LOSS_KEYS = {  # method -> its YAML keys; the knobs were fixed in docs/analysis.md before measuring
    "sft": {"sft_loss": "nll"},
    "dft": {"sft_loss": "dft"},
    "dft-floor": {"sft_loss": "dft", "dft_min_weight": 0.1},
    "asft": {"sft_loss": "asft", "asft_alpha": 0.1},
    "eaft": {"sft_loss": "eaft", "eaft_alpha": 1.0},
}
METHODS = tuple(LOSS_KEYS)
LABELS = {"sft": "SFT", "dft": "DFT", "dft-floor": "DFT+floor", "asft": "ASFT", "eaft": "EAFT"}


@dataclass(frozen=True)
class Schedule:
    """Length and peak learning rate of one training (cosine schedule, 5 % warm-up)."""

    steps: int
    lr: float


@dataclass(frozen=True)
class Task:
    """One demo task: its regime, modality, warm start and per-method fine-tuning schedule."""

    name: str
    regime: str
    kind: str  # "text" | "vl"
    warm: Schedule  # random init -> base
    finetune: dict[str, Schedule] = field(hash=False)  # method -> schedule, base -> fine-tuned

    @property
    def template(self) -> str:
        return "empty" if self.kind == "text" else "qwen2_vl"

    @property
    def dataset(self) -> str:
        return "synthetic_code" if self.kind == "text" else "synthetic_colours"

    @property
    def extra(self) -> dict:
        return {} if self.kind == "text" else {"image_max_pixels": VL_PIXELS["max_pixels"], "freeze_vision_tower": False}

    @property
    def metric(self) -> str:
        return "pass@1 (%)" if self.kind == "text" else "accuracy (%)"


FIRST_DEMO = {method: Schedule(100, 2e-3) for method in METHODS}  # the first demo's settings, unchanged
TASKS = (
    Task("code", NEW_KNOWLEDGE, "text", Schedule(100, 3e-3), FIRST_DEMO),
    Task("colours", NEW_KNOWLEDGE, "vl", Schedule(100, 3e-3), FIRST_DEMO),
    # chosen by `dft-mm demo --select` on the validation split (docs/analysis.md, "Selection")
    # SFT and DFT: the first selection; the others: `dft-mm demo --select --methods dft-floor,asft,eaft`
    Task("noisy-code", NOISY, "text", Schedule(100, 3e-3), {
        "sft": Schedule(100, 4e-3), "dft": Schedule(100, 1e-3), "dft-floor": Schedule(100, 2e-3),
        "asft": Schedule(100, 1e-3), "eaft": Schedule(100, 4e-3)}),
)
# the protocol's candidates (docs/analysis.md)
WARM_CANDIDATES = (100, 120, 140, 160, 180)
COMPETENT = (40.0, 80.0)  # validation pass@1 (%) of a partly competent base (amendment 1 in docs/analysis.md)
GRID = tuple(Schedule(steps, lr) for lr in (1e-3, 2e-3, 4e-3) for steps in (50, 100))


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run."""

    seeds: int
    batch_size: int
    sizes: dict[str, dict[str, int]] = field(hash=False)  # task -> split -> number of problems / images
    max_steps: int | None  # caps every schedule (the smoke plan)
    require_improvement: bool  # fail unless every fine-tuned model beats its base on held-out data


PLANS = {
    "full": DemoPlan(seeds=3, batch_size=16, max_steps=None, require_improvement=True, sizes={
        "code": {"train": 200, "heldout": 40}, "colours": {"train": 160, "heldout": 32},
        "noisy-code": {"warm": 80, "demos": 80, "validation": 40, "heldout": 40}}),
    "smoke": DemoPlan(seeds=1, batch_size=4, max_steps=3, require_improvement=False, sizes={
        "code": {"train": 16, "heldout": 6}, "colours": {"train": 8, "heldout": 4},
        "noisy-code": {"warm": 12, "demos": 10, "validation": 6, "heldout": 6}}),
}
