"""``dft-mm report``: one Markdown + one self-contained HTML report over several runs.

Runs are named ``TASK/METHOD@SEED`` (:mod:`dft_mm.analysis.spread`; plain names work too): runs
that share task and method are seeds of one configuration and are pooled. Sections:

1. *What this shows*: two sentences and a verdict table (regime, task, winner, margin) generated
   from the numbers with the comparison rule (:func:`dft_mm.analysis.spread.rank`);
2. scores over seeds (every ``<dataset>_score.json`` below the runs): per task, mean, sd,
   min-max and each seed, and a figure;
3. training curves: one figure per metric with a panel per task, ``nll`` and ``loss`` on a log
   axis, one colour per method (seeds as thin lines);
4. target-token probabilities: per task, a histogram panel per method (mean over seeds,
   min-max whiskers) with the task's first method (the base) as an outline;
5. the paper's code and multimodal tables, only when a run has one, with every reference row;
   judge-free VLM numbers go to their own table marked as a proxy, never the paper's columns;
6. every score file, and the run directories (relative to the report).

Built once as a list of blocks and rendered twice: ``report.md`` links the PNGs beside it,
``report.html`` embeds them as base64 so it is a single file. Missing pieces are written as
missing, never as zeros. Python entry point: :func:`build_report` (same arguments as the CLI).
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from dft_mm import durable
from dft_mm.analysis.cli_args import parse_named
from dft_mm.analysis.markdown import md_escape, md_table
from dft_mm.analysis.plots import (
    METHOD_COLOURS,
    REFERENCE_COLOUR,
    Panel,
    Series,
    plot_curve_panels,
    plot_score_panels,
    plot_token_histograms,
    plot_token_panels,
)
from dft_mm.analysis.runs import CURVE_METRICS, Run, read_run
from dft_mm.analysis.spread import RunName, Spread, compare, parse_run_name, rank
from dft_mm.analysis.tables import MISSING, load_reference, results_table
from dft_mm.errors import UserError

REFERENCE_LABEL = "reference (paper)"
DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "eval" / "reference"
MISSING_NOTE = f"{MISSING} = missing (not run or not found), not zero."
TOKEN_KEYS = ("num_tokens", "bin_edges", "counts", "mean", "quantiles", "share_below_0.1", "share_above_0.9",
              "lowest_bin_tokens")
LOG_CURVES = ("loss", "nll")


@dataclass
class Block:
    """One piece of the report: ``kind`` is heading / summary / text / table / image."""

    kind: str
    text: str = ""
    level: int = 2
    header: list[str] | None = None
    rows: list[list[str]] | None = None
    image: Path | None = None


@dataclass
class Member:
    """One ``--run`` with its parsed name."""

    run: Run
    name: RunName


@dataclass
class ScoreGroup:
    """One task's scores on one dataset/metric/folder, per method: ``[(seed, value)]``."""

    task: str
    dataset: str
    metric: str
    folder: str
    scorer: str
    by_method: dict[str, list[tuple[str | None, float]]] = field(default_factory=dict)

    def spread(self, method: str) -> Spread:
        return Spread(tuple(value for _, value in self.by_method[method]))


def _task_title(task: str) -> str:
    return task or "runs"


STARTS = ("init", "base")  # methods drawn in grey: the untrained start and the base model


def _colours(members: list[Member]) -> dict[str, str]:
    """One colour per method, the same in every figure: grey for init/base (else for the first method)."""
    methods = list(dict.fromkeys(m.name.method for m in members))
    greys = [m for m in methods if m.lower() in STARTS] or methods[:1]
    others = [m for m in methods if m not in greys]
    return {**{m: ("#aaaaaa" if m.lower() == "init" else REFERENCE_COLOUR) for m in greys},
            **{m: METHOD_COLOURS[i % len(METHOD_COLOURS)] for i, m in enumerate(others)}}


def _seed_counts(members: list[Member]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for member in members:
        counts[member.name.group] = counts.get(member.name.group, 0) + 1
    return counts


# ---- scores over seeds ---------------------------------------------------------------------

def score_groups(members: list[Member]) -> list[ScoreGroup]:
    """Scores pooled by (task, dataset, metric, folder), methods in run order."""
    groups: dict[tuple, ScoreGroup] = {}
    for member in members:
        for score in member.run.scores:
            if score.value is None:
                continue
            key = (member.name.task, score.dataset, score.metric, score.folder)
            group = groups.setdefault(key, ScoreGroup(*key, score.scorer_label))
            group.by_method.setdefault(member.name.method, []).append((member.name.seed, float(score.value)))
    return list(groups.values())


def _pair(methods: list[str]) -> tuple[str, str] | None:
    """(DFT, SFT) method names when both are present (any case)."""
    lower = {m.lower(): m for m in methods}
    return (lower["dft"], lower["sft"]) if "dft" in lower and "sft" in lower else None


def _group_label(group: ScoreGroup) -> str:
    folder = "" if group.folder in (".", "") else f" ({group.folder})"
    return f"{group.dataset}{folder}"


def _score_blocks(groups: list[ScoreGroup], colours: dict[str, str], out: Path) -> list[Block]:
    if not groups:
        return []
    panels = [Panel(f"{_task_title(g.task)} · {_group_label(g)}",
                    [Series(method, [], [v for _, v in g.by_method[method]], colours[method]) for method in g.by_method],
                    ylabel=g.metric) for g in groups]
    blocks = [Block("heading", "Scores over seeds"),
              Block("image", "scores per method and seed", image=plot_score_panels(panels, out / "scores.png"))]
    rows = []
    for group in groups:
        methods = list(group.by_method)
        first = group.spread(methods[0])
        for method in methods:
            spread = group.spread(method)
            delta = MISSING if method == methods[0] else f"{spread.mean - first.mean:+.2f}"
            seeds = " ".join(f"{'' if seed is None else seed + ':'}{value:.2f}" for seed, value in group.by_method[method])
            rows.append([_task_title(group.task), _group_label(group), group.metric, group.scorer, method, str(spread.n),
                         f"{spread.mean:.2f}", f"{spread.sd:.2f}" if spread.n > 1 else MISSING,
                         f"{spread.low:.2f}–{spread.high:.2f}", delta, seeds])
    header = ["task", "dataset (folder)", "metric", "scorer", "method", "seeds", "mean", "sd", "min–max",
              "Δ mean vs first method", "per seed (seed:score)"]
    note = ("Dots are seeds, bars their mean. sd is the sample standard deviation (n - 1). "
            "Δ is against the first method listed for the task.")
    return blocks + [Block("table", header=header, rows=rows), Block("text", note)]


# ---- what this shows ------------------------------------------------------------------------

def _token_shares(stats: list[dict]) -> tuple[float, float] | None:
    shares = [(s["share_below_0.1"], s["share_above_0.9"]) for s in stats
              if s.get("share_below_0.1") is not None and s.get("share_above_0.9") is not None]
    if not shares:
        return None
    return sum(b for b, _ in shares) / len(shares), sum(a for _, a in shares) / len(shares)


def verdict_blocks(groups: list[ScoreGroup], notes: dict[str, str]) -> list[Block]:
    """What this shows: two sentences and a verdict table (regime, task, winner, margin), from
    the numbers only, by the comparison rule of :mod:`dft_mm.analysis.spread`."""
    rows, winners, pairs = [], {}, {1: [], -1: [], 0: []}
    for group in groups:
        spreads = {method: group.spread(method) for method in group.by_method}
        if len(spreads) < 2:
            continue
        verdict_ = rank(spreads)
        task = _task_title(group.task)
        rows.append([notes.get(group.task, MISSING), task, f"{_group_label(group)} {group.metric}", verdict_.text(),
                     verdict_.margin_text(),
                     ", ".join(f"{m} {spreads[m].mean:.2f}" for m in sorted(spreads, key=lambda m: -spreads[m].mean))])
        winners.setdefault(verdict_.winner, []).append(task)
        pair = _pair(list(spreads))
        if pair:
            pairs[compare(spreads[pair[0]], spreads[pair[1]])].append(task)
    if not rows:
        return [Block("summary", "No scores were found below the runs; the sections below show what was found.")]
    won = [f"{method} wins {len(tasks)} ({', '.join(tasks)})" for method, tasks in winners.items() if method]
    unclear = winners.get(None, [])
    first = (f"Over {len(rows)} task{'s' * (len(rows) != 1)}: " + "; ".join(won + (
        [f"no clear winner in {len(unclear)} ({', '.join(unclear)})"] if unclear else [])) + ".")
    if any(pairs.values()):
        second = (f"DFT against SFT alone, by the same rule: DFT wins {len(pairs[1])}, SFT wins {len(pairs[-1])}, "
                  f"no clear difference in {len(pairs[0])}.")
    else:
        second = "The winner has the highest mean and its worst seed beats every other method's best seed."
    header = ["regime", "task", "score", "winner", "margin (mean)", "methods by mean"]
    rule = ("A method wins when its mean is the highest and its worst seed beats every other method's best seed; "
            "otherwise there is no clear winner and the methods it does not clearly beat are named. The margin is "
            "the top mean minus the runner-up's, in points.")
    return [Block("summary", f"{first} {second}"), Block("table", header=header, rows=rows), Block("text", rule)]


# ---- training curves ------------------------------------------------------------------------

def _curve_blocks(members: list[Member], colours: dict[str, str], seeds: dict, out: Path) -> list[Block]:
    blocks = [Block("heading", "Training curves")]
    tasks = list(dict.fromkeys(m.name.task for m in members))
    for metric in CURVE_METRICS:
        panels = []
        for task in tasks:
            series = [Series(m.name.method, *m.run.curves[metric], colours[m.name.method], faint=seeds[m.name.group] > 1)
                      for m in members if m.name.task == task and metric in m.run.curves]
            if series:
                panels.append(Panel(_task_title(task), series))
        log = metric in LOG_CURVES and all(v > 0 for p in panels for s in p.series for v in s.y)
        if panels:
            blocks.append(Block("image", f"{metric} per task", image=plot_curve_panels(panels, metric, out / f"curve_{metric}.png", log)))
        lacking = [m.run.name for m in members if m.run.trainer_state is not None and metric not in m.run.curves]
        if lacking:
            blocks.append(Block("text", f"'{metric}': {MISSING} missing for {', '.join(lacking)} "
                                        "(their trainer_state.json log_history has no such entry)."))
    untrained = [m.run.name for m in members if m.run.trainer_state is None]
    if untrained:
        blocks.append(Block("text", f"No trainer_state.json (no curves) for: {', '.join(untrained)}."))
    rows = []
    for member in members:
        run = member.run
        last = {m: f"{run.curves[m][1][-1]:.4g}" for m in CURVE_METRICS if m in run.curves}
        steps = max((s for steps, _ in run.curves.values() for s in steps), default=None)
        where = str(run.trainer_state.relative_to(run.path)) if run.trainer_state else MISSING
        rows.append([run.name, where, MISSING if steps is None else str(steps)] + [last.get(m, MISSING) for m in CURVE_METRICS])
    note = ("'nll' is the comparable quantity (mean -log p of the targets, whatever the objective); 'loss' is "
            "what each run optimised, so SFT and DFT losses are on different scales.")
    return blocks + [Block("text", note),
                     Block("table", header=["run", "trainer_state", "last step", *(f"last {m}" for m in CURVE_METRICS)],
                           rows=rows), Block("text", MISSING_NOTE)]


# ---- target-token probabilities -------------------------------------------------------------

def _token_entries(members: list[Member]) -> tuple[dict[str, dict], dict[str, dict]]:
    """``token_probs.json`` models, as ({run name: stats} for a model that *is* a run, {label: stats} for the rest).

    A model is a run when its ``model_dir`` is that run's dir, else when its name is the run's name.
    """
    by_dir = {m.run.path.resolve(): m.run.name for m in members}
    names = {m.run.name for m in members}
    own, other, seen = {}, {}, set()
    for member in members:
        run = member.run
        for path, payload in run.token_probs:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            for model, stats in payload.get("models", {}).items():
                lacking = [key for key in TOKEN_KEYS if key not in stats]
                if lacking:
                    raise UserError(f"{path}: model '{model}' lacks {lacking}; rerun 'dft-mm analyze tokens'.")
                match = by_dir.get(Path(str(stats.get("model_dir", ""))).resolve()) or (model if model in names else None)
                if match and match not in own:
                    own[match] = stats
                else:
                    suffix = "" if len(run.token_probs) == 1 else f" ({path.parent.relative_to(run.path)})"
                    other[f"{run.name} / {model}{suffix}"] = stats
    return own, other


def _token_groups(members: list[Member], own: dict[str, dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for member in members:
        if member.run.name in own:
            groups.setdefault(member.name.group, []).append(own[member.run.name])
    return groups


def _share_sentences(groups: dict[tuple[str, str], list[dict]]) -> str:
    """Per task, each method's share of target tokens below p = 0.1 and above 0.9 (mean over seeds)."""
    sentences = []
    for task in dict.fromkeys(task for task, _ in groups):
        shares = [(method, _token_shares(stats)) for (t, method), stats in groups.items() if t == task]
        shares = [(method, share) for method, share in shares if share is not None]
        if len(shares) >= 2:
            sentences.append(f"Target tokens of {_task_title(task)} with p < 0.1 / p > 0.9 (mean over seeds): "
                             + ", ".join(f"{m} {low:.1%} / {high:.1%}" for m, (low, high) in shares) + ".")
    return " ".join(sentences)


def _share(value) -> str:
    return MISSING if value is None else f"{value:.1%}"


def _token_blocks(members: list[Member], own: dict, other: dict, groups: dict, colours: dict, out: Path) -> list[Block]:
    blocks = [Block("heading", "Target-token probabilities")]
    if not own and not other:
        return blocks + [Block("text", f"{MISSING} no token_probs.json below the run dirs "
                                       "(run 'dft-mm analyze tokens --out RUN_DIR/analysis').")]
    panels = []
    for task in dict.fromkeys(task for task, _ in groups):
        methods = [(method, stats) for (t, method), stats in groups.items() if t == task]
        (reference_method, reference_stats), rest = methods[0], methods[1:]
        reference = {**reference_stats[0], "label": reference_method}
        same_bins = [(m, s, colours[m]) for m, s in rest if all(x["bin_edges"] == reference["bin_edges"] for x in s)]
        if same_bins:
            panels.append((_task_title(task), reference, same_bins))
    if panels:
        blocks += [Block("image", "token probabilities per task and method", image=plot_token_panels(panels, out / "token_probs_tasks.png")),
                   Block("text", "Bars: the method (mean over its seeds, whiskers min-max); black outline: the task's first "
                                 "analysed method (the base). SFT typically lifts every token; DFT polarises: more mass near "
                                 "1 and a tail left near 0 (the paper's picture).")]
        shares = _share_sentences(groups)
        if shares:
            blocks.append(Block("text", shares))
    if other:
        edges = next(iter(other.values()))["bin_edges"]
        plotted = {name: stats for name, stats in other.items() if stats["bin_edges"] == edges}
        blocks.append(Block("image", "token probabilities", image=plot_token_histograms(plotted, out / "token_probs.png")))
        if len(plotted) < len(other):
            blocks.append(Block("text", "Not in the figure (other bins): " + ", ".join(sorted(set(other) - set(plotted)))))
    rows = [[name, str(stats["num_tokens"]),
             MISSING if stats["mean"] is None else f"{stats['mean']:.4g}",
             MISSING if stats["quantiles"].get("0.5") is None else f"{stats['quantiles']['0.5']:.4f}",
             _share(stats["share_below_0.1"]), _share(stats["share_above_0.9"]),
             " ".join(repr(item["token"]) for item in stats["lowest_bin_tokens"][:5]) or MISSING]
            for name, stats in [*own.items(), *other.items()]]
    lacking = [m.run.name for m in members if m.run.name not in own and not m.run.token_probs]
    header = ["run / model", "tokens", "mean p", "median p", "p < 0.1", "p > 0.9", "top lowest-bin tokens"]
    blocks.append(Block("table", header=header, rows=rows))
    if lacking:
        blocks.append(Block("text", f"No token analysis for {', '.join(lacking)}."))
    return blocks


# ---- paper tables ---------------------------------------------------------------------------

def _row_scorer(table, row: dict) -> str:
    return "vlmevalkit" if (row.get("scorer") or table.scorer) == "vlmevalkit" else "judge-free"


def _relative(path: Path, out: Path) -> str:
    """``path`` relative to the report folder ``out``; absolute when they share nothing but ``/``."""
    path, out = path.resolve(), out.resolve()
    if os.path.commonpath([path, out]) == path.anchor:
        return str(path)
    return os.path.relpath(path, out)


def _reference_source(reference_dir: Path, out: Path) -> str:
    if reference_dir.resolve() == DEFAULT_REFERENCE_DIR:
        return "eval/reference/ in dft_mm, from Wu et al. 2025, arXiv:2508.05629"
    return _relative(reference_dir, out)


def _paper_blocks(runs: list[Run], reference_dir: Path | None, out: Path) -> list[Block]:
    """The code table, the VLMEvalKit multimodal table, and the judge-free proxy table (each only when a run has rows)."""
    specs = [("code_table", "Code benchmarks (pass@1, %)", None, True),
             ("vlm_table", "Multimodal math benchmarks (VLMEvalKit, %)", "vlmevalkit", True),
             ("vlm_table", "Multimodal math, judge-free proxy (%): not the paper's metric", "judge-free", False)]
    blocks = []
    for kind, title, scorer, with_reference in specs:
        keep = (lambda table, row: True) if scorer is None else (lambda table, row, s=scorer: _row_scorer(table, row) == s)
        used = [run for run in runs if any(keep(t, r) for t in run.tables.get(kind, []) for r in t.rows)]
        if not used:
            continue
        reference = load_reference(kind, reference_dir) if with_reference else []
        header, rows = results_table(kind, used, reference, keep=keep)
        if not with_reference:
            header = header[:2] + [f"{column} (proxy)" for column in header[2:]]
        notes = [f"Deltas in brackets are against the first row ({used[0].name}).", MISSING_NOTE]
        without = [run.name for run in runs if run not in used]
        if without:
            notes.append(f"Runs without this table: {', '.join(without)}.")
        if reference:
            notes.append(f"Rows labelled '{REFERENCE_LABEL}' are the paper's published numbers "
                         f"({_reference_source(reference_dir, out)}), not runs of this report.")
        if not with_reference:
            notes.append("Scored by dft_mm's judge-free rule / math-verify scorer: a proxy for VLMEvalKit's judged "
                         "numbers, so the paper's rows are not shown beside it. Use 'dft-mm eval vlm vlmevalkit' for "
                         "numbers to put next to the paper.")
        blocks += [Block("heading", title), Block("table", header=header, rows=rows), Block("text", " ".join(notes))]
    return blocks


# ---- listings -------------------------------------------------------------------------------

def _listing_blocks(members: list[Member], out: Path) -> list[Block]:
    blocks = []
    rows = [[m.run.name, s.dataset, s.folder, s.metric, s.scorer_label, MISSING if s.value is None else f"{s.value:.2f}"]
            for m in members for s in m.run.scores]
    if rows:
        blocks += [Block("heading", "Every score file"),
                   Block("table", header=["run", "dataset", "folder", "metric", "scorer", "value"], rows=rows),
                   Block("text", "From the <dataset>_score.json files that 'dft-mm eval code score' and 'dft-mm eval vlm "
                                 "score' write below each run dir. A VLM score counts as VLMEvalKit's only when its file "
                                 "says \"scorer\": \"vlmevalkit\"; otherwise it is a judge-free proxy.")]
    rows = [[m.run.name, _task_title(m.name.task), m.name.method, m.name.seed or MISSING, _relative(m.run.path, out)]
            for m in members]
    return blocks + [Block("heading", "Run directories"),
                     Block("table", header=["run", "task", "method", "seed", "dir (relative to this report)"], rows=rows)]


# ---- rendering ------------------------------------------------------------------------------

def render_markdown(blocks: list[Block]) -> str:
    """Markdown with images linked by file name (they sit beside report.md)."""
    parts = []
    for block in blocks:
        if block.kind == "heading":
            parts.append("#" * block.level + " " + block.text)
        elif block.kind == "summary":
            parts.append("**What this shows.** " + block.text)
        elif block.kind == "text":
            parts.append(block.text)
        elif block.kind == "table":
            parts.append(md_table(block.header, [[md_escape(c) for c in row] for row in block.rows]))
        else:
            parts.append(f"![{block.text}]({block.image.name})")
    return "\n\n".join(parts) + "\n"


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"
         "h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}"
         ".summary{background:#f4f7fb;border-left:4px solid #1f77b4;padding:.8em 1em;line-height:1.5}"
         "table{border-collapse:collapse;font-size:85%;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 7px;"
         "text-align:right}th{background:#f2f2f2}td:first-child,td:nth-child(2){text-align:left}"
         "tbody tr:nth-child(even){background:#fafafa}tr.reference{background:#eef3fb!important;font-style:italic}"
         "figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{font-size:85%;color:#555}"
         "p{max-width:75em}")


def render_html(blocks: list[Block], title: str) -> str:
    """One self-contained HTML page: PNGs embedded as base64 data URIs, reference rows styled."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>"]
    for block in blocks:
        if block.kind == "heading":
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif block.kind == "summary":
            parts.append(f"<p class='summary'><strong>What this shows.</strong> {html.escape(block.text)}</p>")
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
            parts.append(f"<figure><img alt='{html.escape(block.text)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(block.text)}</figcaption></figure>")
    return "\n".join(parts) + "\n</body></html>\n"


def build_report(run: list[str], out: str, *, reference_dir: str | None = None, title: str = "DFT run report",
                 task_notes: dict[str, str] | None = None) -> Path:
    """Write ``out/report.md``, ``out/report.html`` and the PNGs for ``run`` (``NAME=DIR`` each).

    ``task_notes`` (``{task: short description}``, e.g. the regime) fills the verdict table's first column.
    """
    runs = [read_run(name, path) for name, path in parse_named(run, "--run").items()]
    members = [Member(r, parse_run_name(r.name)) for r in runs]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    references = Path(reference_dir) if reference_dir else (DEFAULT_REFERENCE_DIR if DEFAULT_REFERENCE_DIR.is_dir() else None)
    colours, seeds = _colours(members), _seed_counts(members)
    groups = score_groups(members)
    own, other = _token_entries(members)
    token_groups = _token_groups(members, own)
    paper = _paper_blocks(runs, references, out_dir)
    blocks = [Block("heading", title, level=1), *verdict_blocks(groups, task_notes or {})]
    blocks += _score_blocks(groups, colours, out_dir)
    blocks += _curve_blocks(members, colours, seeds, out_dir)
    blocks += _token_blocks(members, own, other, token_groups, colours, out_dir)
    blocks += paper
    blocks += _listing_blocks(members, out_dir)
    durable.write_text(out_dir / "report.md", render_markdown(blocks))
    durable.write_text(out_dir / "report.html", render_html(blocks, title))
    print(f"report: wrote {out_dir / 'report.md'} and {out_dir / 'report.html'}")
    return out_dir / "report.md"
