"""PNG figures with matplotlib's Agg canvas (no display, no pyplot global state)."""

from __future__ import annotations

from pathlib import Path


def _new_figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


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


def plot_curves(series: dict[str, tuple[list[float], list[float]]], metric: str, path: Path) -> Path:
    """One metric against the training step, one line per run (``{run: (steps, values)}``)."""
    figure, axes = _new_figure()
    for name, (steps, values) in series.items():
        axes.plot(steps, values, label=name, marker="." if len(steps) < 30 else None)
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.set_title(metric)
    if series:
        axes.legend()
    return _save(figure, path)
