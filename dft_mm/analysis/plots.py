"""PNG figures with matplotlib's Agg canvas (no display, no pyplot global state).

The panel figures take plain data: a panel title, then series with a label and a colour, so the
report decides grouping and colours (one colour per method, the same in every figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

REFERENCE_COLOUR = "#555555"
METHOD_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Series:
    """One line (or set of points) in a panel."""

    label: str
    x: list[float]
    y: list[float]
    colour: str
    faint: bool = False  # a seed among several: thinner, and unlabelled after the first


@dataclass
class Panel:
    title: str
    series: list[Series] = field(default_factory=list)
    ylabel: str = ""


def _new_figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _panel_grid(count: int, width: float = 4.6, height: float = 3.4):
    """A figure with ``count`` panels side by side (at most 3 per row)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(3, max(1, count))
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(width * columns, height * rows), dpi=100)
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(rows, columns, i + 1) for i in range(count)]


def _legend(axes) -> None:
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        axes.legend(fontsize=8)


def plot_curve_panels(panels: list[Panel], metric: str, path: Path, log_scale: bool) -> Path:
    """``metric`` against the training step, one panel per task; log y when ``log_scale``."""
    figure, axes_list = _panel_grid(len(panels))
    for axes, panel in zip(axes_list, panels):
        seen = set()
        for series in panel.series:
            label = None if series.label in seen else series.label
            seen.add(series.label)
            axes.plot(series.x, series.y, color=series.colour, label=label,
                      linewidth=0.9 if series.faint else 1.6, alpha=0.75 if series.faint else 1.0)
        if log_scale:
            axes.set_yscale("log")
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel("step")
        axes.set_ylabel(metric + (" (log scale)" if log_scale else ""))
        _legend(axes)
    return _save(figure, path)


def plot_score_panels(panels: list[Panel], path: Path) -> Path:
    """Per task: one column per method, a dot per seed and a bar at the mean (written at its foot)."""
    figure, axes_list = _panel_grid(len(panels), width=3.8, height=3.2)
    for axes, panel in zip(axes_list, panels):
        for index, series in enumerate(panel.series):
            mean = sum(series.y) / len(series.y)
            axes.bar([index], [mean], width=0.6, color=series.colour, alpha=0.35)
            spread = [index + 0.12 * (i - (len(series.y) - 1) / 2) for i in range(len(series.y))]
            axes.scatter(spread, series.y, color=series.colour, s=18, zorder=3)
            axes.annotate(f"{mean:.1f}", (index, 1.5), ha="center", va="bottom", fontsize=8)
        axes.set_xticks(range(len(panel.series)), [s.label for s in panel.series])
        axes.set_ylim(0, 105)
        axes.set_title(panel.title, fontsize=10)
        axes.set_ylabel(panel.ylabel)
    return _save(figure, path)


def plot_token_panels(panels: list[tuple[str, dict | None, list[tuple[str, list[dict], str]]]], path: Path) -> Path:
    """Per task and method: the target-token probability histogram, the reference as an outline.

    ``panels`` holds ``(title, reference stats or None, [(method, [stats per seed], colour)])``; each
    stats dict has ``bin_edges`` and ``counts`` as in ``token_probs.json``. Bars are the mean over
    the seeds, whiskers their min-max; log y (the paper's figure).
    """
    flat = [(title, reference, method) for title, reference, methods in panels for method in methods]
    figure, axes_list = _panel_grid(len(flat))
    for axes, (title, reference, (method, seeds, colour)) in zip(axes_list, flat):
        edges = seeds[0]["bin_edges"]
        bins = len(edges) - 1
        per_bin = [[s["counts"][i] for s in seeds] for i in range(bins)]
        means = [sum(values) / len(values) for values in per_bin]
        below = [m - min(v) for m, v in zip(means, per_bin)]
        above = [max(v) - m for m, v in zip(means, per_bin)]
        seeds_note = f" (mean of {len(seeds)} seeds)" if len(seeds) > 1 else ""
        axes.bar(range(bins), [max(m, 0.5) for m in means], width=0.8, color=colour, alpha=0.8,
                 yerr=[below, above] if len(seeds) > 1 else None, capsize=2, label=method + seeds_note)
        if reference is not None and reference["bin_edges"] == edges:
            axes.step(range(bins), [max(c, 0.5) for c in reference["counts"]], where="mid", color="black",
                      linewidth=1.3, label=reference.get("label", "reference"))
        axes.set_yscale("log")
        axes.set_xticks(range(bins), [f"{edges[i]:.1f}" for i in range(bins)], fontsize=7)
        axes.set_xlabel("target-token probability (bin start)")
        axes.set_ylabel("tokens (log scale)")
        axes.set_title(f"{title}: {method}", fontsize=10)
        _legend(axes)
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(str(path), format="png")
    return path


def plot_token_histograms(models: dict[str, dict], path: Path) -> Path:
    """The paper's token-probability figure: per-bin counts, models side by side, log y.

    ``models`` maps a name to a statistics dict with ``bin_edges`` (``bins + 1``) and
    ``counts`` (``bins``), as in ``token_probs.json``.
    """
    figure, axes = _new_figure(max(7.0, 0.9 * len(next(iter(models.values()), {"counts": []})["counts"])))
    width = 0.8 / max(1, len(models))
    for index, (name, stats) in enumerate(models.items()):
        edges, counts = stats["bin_edges"], stats["counts"]
        centres = [i + (index - (len(models) - 1) / 2) * width for i in range(len(counts))]
        axes.bar(centres, counts, width=width, label=name)
        labels = [f"{edges[i]:.2g}-{edges[i + 1]:.2g}" for i in range(len(counts))]
        axes.set_xticks(range(len(counts)), labels, rotation=45, ha="right")
    axes.set_yscale("log")
    axes.set_xlabel("probability of the target token")
    axes.set_ylabel("tokens (log scale)")
    axes.set_title("Target-token probability distribution")
    if models:
        axes.legend()
    return _save(figure, path)
