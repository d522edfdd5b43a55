"""Seeds of one configuration: run names, spread over seeds, and the comparison rule.

A report run named ``TASK/METHOD@SEED`` (e.g. ``noisy-code/dft@1``) is seed ``SEED`` of method
``METHOD`` on task ``TASK``; runs that share task and method are pooled over their seeds. Both
parts are optional: ``dft`` is method ``dft`` of the unnamed task, with no seed.

The comparison rule is the one ``docs/analysis.md`` fixed before the demo was measured: a method
*wins* when its mean is higher **and** its worst seed beats the other method's best seed;
otherwise there is no clear difference. Over several methods (:func:`rank`), the method with
the highest mean is the *winner* when it wins over every other one; otherwise there is no clear
winner, and the methods it does not clearly beat are named beside it.

Example::

    >>> parse_run_name("noisy-code/dft@1")
    RunName(task='noisy-code', method='dft', seed='1')
    >>> a, b = Spread((90.0, 92.5, 95.0)), Spread((80.0, 85.0, 87.5))
    >>> a.text(), compare(a, b)
    ('92.50 ± 2.50 (90.00–95.00, n=3)', 1)
    >>> rank({"sft": a, "dft": b}).text()
    'sft'
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class RunName:
    """A report run name split into task, method and seed."""

    task: str
    method: str
    seed: str | None

    @property
    def group(self) -> tuple[str, str]:
        return self.task, self.method


def parse_run_name(name: str) -> RunName:
    """``TASK/METHOD@SEED`` -> :class:`RunName`; ``TASK/`` and ``@SEED`` may be left out."""
    task, _, rest = name.rpartition("/")
    method, at, seed = rest.partition("@")
    return RunName(task, method or rest, seed if at and seed else None)


@dataclass(frozen=True)
class Spread:
    """Scores of the seeds of one configuration (percent)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        """Sample standard deviation (n - 1); 0 for a single seed."""
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def text(self) -> str:
        if self.n == 1:
            return f"{self.mean:.2f} (n=1)"
        return f"{self.mean:.2f} ± {self.sd:.2f} ({self.low:.2f}–{self.high:.2f}, n={self.n})"


def compare(a: Spread, b: Spread) -> int:
    """``1`` when ``a`` wins, ``-1`` when ``b`` wins, ``0`` for no clear difference."""
    if a.mean > b.mean and a.low > b.high:
        return 1
    if b.mean > a.mean and b.low > a.high:
        return -1
    return 0


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`rank`: the ``top`` method (highest mean), the ``runner_up`` and the
    ``margin`` between their means (points), and the methods the top one does not clearly beat."""

    top: str
    runner_up: str | None
    margin: float | None
    contenders: tuple[str, ...]

    @property
    def winner(self) -> str | None:
        return None if self.contenders else self.top

    def text(self) -> str:
        """``sft``, or ``no clear winner (sft ≈ eaft)``."""
        return self.top if self.winner else f"no clear winner ({' ≈ '.join((self.top, *self.contenders))})"

    def margin_text(self) -> str:
        return "—" if self.runner_up is None else f"{self.margin:+.2f} over {self.runner_up}"


def rank(spreads: dict[str, Spread]) -> Verdict:
    """The verdict over several methods' spreads (at least one); ties in the mean keep the given order."""
    order = sorted(spreads, key=lambda name: -spreads[name].mean)
    top = order[0]
    runner_up = order[1] if len(order) > 1 else None
    margin = None if runner_up is None else spreads[top].mean - spreads[runner_up].mean
    contenders = tuple(name for name in order[1:] if compare(spreads[top], spreads[name]) != 1)
    return Verdict(top, runner_up, margin, contenders)
