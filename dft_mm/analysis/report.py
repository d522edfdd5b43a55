"""``dft-mm report``: one Markdown + one self-contained HTML report over several runs.

Sections: training curves (one PNG per metric, all runs), the code and multimodal tables in
the paper's column order (deltas vs the first run, the paper's rows labelled as reference),
and the token-probability analysis. The report is built once as a list of blocks and
rendered twice: ``report.md`` links the PNGs beside it, ``report.html`` embeds them as
base64 so it is a single file. Missing pieces are written as missing, never as zeros.

Python entry point: :func:`build_report` (same arguments as the CLI).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from dft_mm.analysis.cli_args import parse_named
from dft_mm.analysis.markdown import md_escape, md_table
from dft_mm.analysis.plots import plot_curves, plot_token_histograms
from dft_mm.analysis.runs import CURVE_METRICS, Run, read_run
from dft_mm.analysis.tables import MISSING, load_reference, results_table
from dft_mm.errors import UserError

REFERENCE_LABEL = "reference (paper)"
DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "eval" / "reference"
MISSING_NOTE = f"{MISSING} = missing (not run or not found), not zero."
TOKEN_KEYS = ("num_tokens", "bin_edges", "counts", "mean", "quantiles", "share_below_0.1", "share_above_0.9",
              "lowest_bin_tokens")


@dataclass
class Block:
    """One piece of the report: ``kind`` is heading / text / table / image."""

    kind: str
    text: str = ""
    level: int = 2
    header: list[str] | None = None
    rows: list[list[str]] | None = None
    image: Path | None = None


def _curve_blocks(runs: list[Run], out: Path) -> list[Block]:
    blocks = [Block("heading", "Training curves")]
    for metric in CURVE_METRICS:
        series = {run.name: run.curves[metric] for run in runs if metric in run.curves}
        lacking = [run.name for run in runs if metric not in run.curves]
        if series:
            blocks.append(Block("image", metric, image=plot_curves(series, metric, out / f"curve_{metric}.png")))
        if lacking:
            blocks.append(Block("text", f"'{metric}': {MISSING} missing for {', '.join(lacking)} "
                                        "(no trainer_state.json, or its log_history has no such entry)."))
    rows = []
    for run in runs:
        last = {m: f"{run.curves[m][1][-1]:.4g}" for m in CURVE_METRICS if m in run.curves}
        steps = max((s for steps, _ in run.curves.values() for s in steps), default=None)
        where = str(run.trainer_state.relative_to(run.path)) if run.trainer_state else MISSING
        rows.append([run.name, where, MISSING if steps is None else str(steps)]
                    + [last.get(m, MISSING) for m in CURVE_METRICS])
    blocks += [Block("table", header=["run", "trainer_state", "last step", *(f"last {m}" for m in CURVE_METRICS)],
                     rows=rows), Block("text", MISSING_NOTE)]
    return blocks


def _table_blocks(kind: str, title: str, runs: list[Run], reference_dir: Path | None) -> list[Block]:
    header, rows = results_table(kind, runs, load_reference(kind, reference_dir))
    notes = [f"Deltas in brackets are against the first row ({runs[0].name}).", MISSING_NOTE]
    if any(row[0] == REFERENCE_LABEL for row in rows):
        notes.append(f"Rows labelled '{REFERENCE_LABEL}' are the paper's published numbers "
                     f"({reference_dir}), not runs of this report.")
    return [Block("heading", title), Block("table", header=header, rows=rows), Block("text", " ".join(notes))]


def _score_blocks(runs: list[Run]) -> list[Block]:
    """Every per-dataset score file below the runs (held-out sets and single benchmarks)."""
    rows = [[run.name, dataset, metric, MISSING if value is None else f"{value:.2f}"]
            for run in runs for dataset, metric, value in run.scores]
    if not rows:
        return []
    return [Block("heading", "Per-dataset scores"), Block("table", header=["run", "dataset", "metric", "value"], rows=rows),
            Block("text", "From the <dataset>_score.json files that 'dft-mm eval code score' and 'dft-mm eval vlm score' "
                          "write below each run dir.")]


def _token_blocks(runs: list[Run], out: Path) -> list[Block]:
    blocks = [Block("heading", "Target-token probabilities")]
    entries = {}
    for run in runs:
        for path, payload in run.token_probs:
            for model, stats in payload.get("models", {}).items():
                lacking_keys = [key for key in TOKEN_KEYS if key not in stats]
                if lacking_keys:
                    raise UserError(f"{path}: model '{model}' lacks {lacking_keys}; rerun 'dft-mm analyze tokens'.")
                suffix = "" if len(run.token_probs) == 1 else f" ({path.parent.relative_to(run.path)})"
                entries[f"{run.name} / {model}{suffix}"] = stats
    lacking = [run.name for run in runs if not run.token_probs]
    if lacking:
        blocks.append(Block("text", f"{MISSING} missing for {', '.join(lacking)}: no token_probs.json below the run "
                                    "dir (run 'dft-mm analyze tokens --out RUN_DIR/analysis')."))
    if not entries:
        return blocks
    edges = next(iter(entries.values()))["bin_edges"]
    plotted = {name: stats for name, stats in entries.items() if stats["bin_edges"] == edges}
    blocks.append(Block("image", "token probabilities", image=plot_token_histograms(plotted, out / "token_probs.png")))
    if len(plotted) < len(entries):
        blocks.append(Block("text", "Not in the figure (other bins): " + ", ".join(sorted(set(entries) - set(plotted)))))

    def share(value):
        return MISSING if value is None else f"{value:.1%}"

    rows = [[name, str(stats["num_tokens"]),
             MISSING if stats["mean"] is None else f"{stats['mean']:.4g}",
             MISSING if stats["quantiles"].get("0.5") is None else f"{stats['quantiles']['0.5']:.4f}",
             share(stats["share_below_0.1"]), share(stats["share_above_0.9"]),
             " ".join(repr(item["token"]) for item in stats["lowest_bin_tokens"][:5]) or MISSING]
            for name, stats in entries.items()]
    header = ["run / model", "tokens", "mean p", "median p", "p < 0.1", "p > 0.9", "top lowest-bin tokens"]
    return blocks + [Block("table", header=header, rows=rows)]


def render_markdown(blocks: list[Block]) -> str:
    """Markdown with images linked by file name (they sit beside report.md)."""
    parts = []
    for block in blocks:
        if block.kind == "heading":
            parts.append("#" * block.level + " " + block.text)
        elif block.kind == "text":
            parts.append(block.text)
        elif block.kind == "table":
            parts.append(md_table(block.header, [[md_escape(c) for c in row] for row in block.rows]))
        else:
            parts.append(f"![{block.text}]({block.image.name})")
    return "\n\n".join(parts) + "\n"


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}"
         "td:first-child,td:nth-child(2){text-align:left}tr.reference{background:#eef3fb;font-style:italic}"
         "img{max-width:100%}")


def render_html(blocks: list[Block], title: str) -> str:
    """One self-contained HTML page: PNGs embedded as base64 data URIs, reference rows styled."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>"]
    for block in blocks:
        if block.kind == "heading":
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif block.kind == "text":
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif block.kind == "table":
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block.header)
            body = "".join(
                ("<tr class='reference'>" if row[0] == REFERENCE_LABEL else "<tr>")
                + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.image.read_bytes()).decode("ascii")
            parts.append(f"<p><img alt='{html.escape(block.text)}' src='data:image/png;base64,{data}'></p>")
    return "\n".join(parts) + "\n</body></html>\n"


def build_report(run: list[str], out: str, *, reference_dir: str | None = None) -> Path:
    """Write ``out/report.md``, ``out/report.html`` and the PNGs for ``run`` (``NAME=DIR`` each)."""
    runs = [read_run(name, path) for name, path in parse_named(run, "--run").items()]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    references = Path(reference_dir) if reference_dir else (DEFAULT_REFERENCE_DIR if DEFAULT_REFERENCE_DIR.is_dir() else None)
    title = "DFT run report"
    listing = "; ".join(f"{r.name} = {r.path}" for r in runs)
    blocks = [Block("heading", title, level=1), Block("text", f"Runs: {listing}.")]
    blocks += _curve_blocks(runs, out_dir)
    blocks += _table_blocks("code_table", "Code benchmarks (pass@1, %)", runs, references)
    blocks += _table_blocks("vlm_table", "Multimodal math benchmarks (%)", runs, references)
    blocks += _score_blocks(runs)
    blocks += _token_blocks(runs, out_dir)
    (out_dir / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(blocks, title), encoding="utf-8")
    print(f"report: wrote {out_dir / 'report.md'} and {out_dir / 'report.html'}")
    return out_dir / "report.md"
