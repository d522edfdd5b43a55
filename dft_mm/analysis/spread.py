"""Seeds of one configuration: run names, spread over seeds, and the comparison rule.

A report run named ``TASK/METHOD@SEED`` (e.g. ``noisy-code/dft@1``) is seed ``SEED`` of method
``METHOD`` on task ``TASK``; runs that share task and method are pooled over their seeds. Both
parts are optional: ``dft`` is method ``dft`` of the unnamed task, with no seed.

The comparison rule is the one ``docs/analysis.md`` fixed before the demo was measured: a method
*wins* when its mean is higher **and** its worst seed beats the other method's best seed;
otherwise there is no clear difference.

Example::

    >>> parse_run_name("noisy-code/dft@1")
    RunName(task='noisy-code', method='dft', seed='1')
    >>> a, b = Spread((90.0, 92.5, 95.0)), Spread((80.0, 85.0, 87.5))
    >>> a.text(), compare(a, b)
    ('92.50 ± 2.50 (90.00–95.00, n=3)', 1)
"""

from __future__ import annotations

import math
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


def verdict(name_a: str, a: Spread, name_b: str, b: Spread) -> str:
    """One sentence such as ``DFT wins: 92.50 ± 2.50 (...) vs SFT 85.00 ± ... (every DFT seed above every SFT seed)``."""
    outcome = compare(a, b)
    if outcome == 0:
        gap = a.mean - b.mean
        closer = "" if math.isclose(gap, 0.0) else f" ({name_a} {gap:+.2f} points on the mean)"
        return (f"no clear difference: {name_a} {a.text()} vs {name_b} {b.text()}; the seed ranges overlap{closer}")
    (win, ws), (lose, ls) = ((name_a, a), (name_b, b)) if outcome > 0 else ((name_b, b), (name_a, a))
    every = f"every {win} seed above every {lose} seed" if min(ws.n, ls.n) > 1 else "a single seed each"
    return f"{win} wins: {ws.text()} vs {lose} {ls.text()} ({every})"
