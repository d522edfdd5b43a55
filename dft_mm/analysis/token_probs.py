"""``dft-mm analyze tokens``: each model's probability of every supervised target token.

For each ``NAME=DIR`` model the data goes through LLaMA-Factory's own SFT pipeline
(:mod:`dft_mm.analysis.lf_pipeline`), then teacher forcing gives ``p_t`` for exactly the
tokens training supervises. Batches stream through a :class:`TokenProbHistogram`, so memory
does not grow with the data. Writes, in ``out``:

* ``token_probs.json`` - ``{"settings": {...}, "models": {NAME: statistics}}``, updated after
  each model; a rerun with the same settings skips models already there (same DIR);
* ``token_probs.png``  - the paper's figure: per-bin counts, models side by side, log scale;
* ``lowest_tokens.md`` - the most frequent tokens in the lowest-probability bin per model.

Python entry point: :func:`analyze_tokens` (same arguments as the CLI).
"""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path

import torch

from dft_mm import durable
from dft_mm.analysis.cli_args import parse_named, parse_settings
from dft_mm.analysis.dataset_spec import resolve_dataset
from dft_mm.analysis.histogram import FINE_BINS, TokenProbHistogram
from dft_mm.analysis.markdown import md_code, md_table
from dft_mm.analysis.plots import plot_token_histograms
from dft_mm.errors import UserError
from dft_mm.losses import shift_labels, target_logprobs

IGNORE_INDEX = -100
JSON_NAME, PNG_NAME, MD_NAME = "token_probs.json", "token_probs.png", "lowest_tokens.md"


def supervised_token_logprobs(model, batch: dict, chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probabilities of the supervised targets of one collated batch.

    Args:
        model: a causal LM (or VLM) whose forward takes the collator's keys.
        batch: collator output; ``labels`` ``[B, T]`` with ``IGNORE_INDEX`` on unsupervised
            positions (HF convention: position ``t`` predicts ``labels[t + 1]``).
        chunk_size: supervised positions per fp32 softmax chunk (bounds the ``[n, V]`` upcast).

    Returns:
        ``(log_probs [N] fp32, token_ids [N] long, targets_per_row [B] long)`` on the model's
        device, N = number of supervised tokens, in row-major order.
    """
    device = next(model.parameters()).device
    inputs = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
    targets = shift_labels(inputs.pop("labels"), IGNORE_INDEX)  # [B, T]
    positions = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)  # [P] union over rows
    accepted = inspect.signature(model.forward).parameters
    if "use_cache" in accepted:
        inputs["use_cache"] = False  # no KV cache for a single teacher-forced pass
    if "logits_to_keep" in accepted:
        logits = model(**inputs, logits_to_keep=positions).logits  # [B, P, V]: only needed positions
    else:
        logits = model(**inputs).logits[:, positions]  # [B, P, V]
    kept = targets[:, positions]  # [B, P]
    mask = kept != IGNORE_INDEX
    token_ids = kept[mask]  # [N]
    rows, cols = mask.nonzero(as_tuple=True)
    log_probs = torch.cat([
        target_logprobs(logits[rows[i:i + chunk_size], cols[i:i + chunk_size]][None],
                        token_ids[i:i + chunk_size][None], IGNORE_INDEX)[0][0]
        for i in range(0, token_ids.numel(), chunk_size)
    ]) if token_ids.numel() else torch.zeros(0, device=device)
    return log_probs, token_ids, mask.sum(dim=1)


def model_statistics(pipeline, *, batch_size: int, bins: int, top_k: int, desc: str) -> dict:
    """Stream ``pipeline.dataset`` through the model; the JSON statistics of one model."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    histogram = TokenProbHistogram(bins)
    without_targets = 0
    loader = DataLoader(pipeline.dataset, batch_size=batch_size, shuffle=False, collate_fn=pipeline.collator)
    pipeline.model.eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="batch"):
            log_probs, token_ids, per_row = supervised_token_logprobs(pipeline.model, dict(batch))
            histogram.add(log_probs, token_ids)
            without_targets += int((per_row == 0).sum())
    summary = histogram.summary()
    lowest = list(summary.pop("lowest_bin_tokens").items())[:top_k]
    return {
        "num_samples": len(pipeline.dataset),
        "num_samples_dropped_by_llamafactory": pipeline.num_raw_samples - len(pipeline.dataset),
        "num_samples_without_targets": without_targets,
        **summary,
        "lowest_bin_tokens": [
            {"token_id": token_id, "token": pipeline.tokenizer.decode([token_id]), "count": count}
            for token_id, count in lowest
        ],
    }


def _load_previous(path: Path, settings: dict) -> dict:
    """Finished models from an earlier run with the same settings (``{}`` when none)."""
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err}); delete it to start over.")
    if previous.get("settings") != settings:
        raise UserError(f"{path} was written with other settings ({previous.get('settings')}); use another --out "
                        "or delete the file to start over.")
    return previous.get("models", {})


def lowest_tokens_markdown(models: dict, top_k: int) -> str:
    """``lowest_tokens.md``: per model, the most frequent tokens of the lowest bin."""
    lines = ["# Most frequent tokens in the lowest-probability bin", ""]
    for name, stats in models.items():
        edge = stats["bin_edges"][1]
        lines += [f"## {name}", "",
                  f"{stats['counts'][0]} of {stats['num_tokens']} supervised tokens have p < {edge:g}.", ""]
        rows = [[str(rank), md_code(json.dumps(item["token"], ensure_ascii=False)), str(item["token_id"]),
                 str(item["count"]), f"{item['count'] / stats['counts'][0]:.1%}"]
                for rank, item in enumerate(stats["lowest_bin_tokens"][:top_k], start=1)]
        lines += [md_table(["rank", "token", "id", "count", "share of bin"], rows) if rows else "(no tokens in this bin)", ""]
    return "\n".join(lines)


def resolve_settings(data: str | None, template: str | None, *, recipe: str | None = None,
                     dataset_dir: str | None = None, cutoff_len: int | None = None,
                     max_samples: int | None = None, bins: int = 10, set_args: list[str] | None = None) -> dict:
    """The analysis settings: explicit arguments, else the recipe's keys, else LLaMA-Factory's defaults.

    ``extra_args`` holds the remaining LLaMA-Factory keys (the recipe's data-side keys, then
    ``--set``). The dict is also what a rerun must match to resume.
    """
    from dft_mm.analysis.recipe import recipe_data_args

    extra = recipe_data_args(recipe) if recipe else {}
    recipe_dataset, recipe_dataset_dir = extra.pop("dataset", None), extra.pop("dataset_dir", "data")
    recipe_template, recipe_cutoff = extra.pop("template", None), extra.pop("cutoff_len", 2048)
    recipe_max_samples = extra.pop("max_samples", None)
    extra.update(parse_settings(set_args))
    if data is None:
        if recipe_dataset is None:
            raise UserError("give --data FILE_OR_DATASET, or a --recipe whose YAML names a dataset.")
        data, dataset_dir = recipe_dataset, dataset_dir or recipe_dataset_dir
    template = template or recipe_template
    if template is None:
        raise UserError("give --template (e.g. qwen, qwen2_vl), or a --recipe whose YAML names one.")
    if bins < 2 or FINE_BINS % bins:
        raise UserError(f"--bins {bins}: give a number >= 2 that divides {FINE_BINS} (e.g. 10, 20, 50).")
    return {"data": str(Path(data).resolve()) if Path(data).is_file() else data, "dataset_dir": dataset_dir,
            "template": template, "cutoff_len": cutoff_len or recipe_cutoff,
            "max_samples": max_samples if max_samples is not None else recipe_max_samples,
            "bins": bins, "recipe": recipe, "extra_args": extra}


def analyze_tokens(
    model: list[str],
    data: str | None,
    template: str | None,
    out: str,
    *,
    recipe: str | None = None,
    dataset_dir: str | None = None,
    max_samples: int | None = None,
    cutoff_len: int | None = None,
    batch_size: int = 2,
    bins: int = 10,
    top_k: int = 20,
    dtype: str = "auto",
    set_args: list[str] | None = None,
) -> dict:
    """Analyse every ``NAME=DIR`` in ``model``; write the three files into ``out``; return the JSON.

    ``data`` / ``template`` / ``dataset_dir`` / ``cutoff_len`` / ``max_samples`` default to the
    ``recipe``'s (a LLaMA-Factory training YAML), whose other data-side keys apply too.
    """
    models = parse_named(model, "--model")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be >= 1.")
    settings = resolve_settings(data, template, recipe=recipe, dataset_dir=dataset_dir, cutoff_len=cutoff_len,
                                max_samples=max_samples, bins=bins, set_args=set_args)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / JSON_NAME
    results = _load_previous(json_path, settings)
    with tempfile.TemporaryDirectory(prefix="dft_mm_analysis_") as scratch:
        spec = resolve_dataset(settings["data"], settings["dataset_dir"], Path(scratch) / "data")
        for index, (name, model_dir) in enumerate(models.items()):
            if results.get(name, {}).get("model_dir") == model_dir:
                print(f"analyze tokens: {name} already in {json_path}, skipped")
                continue
            from dft_mm.analysis.lf_pipeline import load_sft_pipeline

            pipeline = load_sft_pipeline(model_dir, spec, settings["template"], Path(scratch) / f"model{index}",
                                         cutoff_len=settings["cutoff_len"], max_samples=settings["max_samples"],
                                         dtype=dtype, extra_args=settings["extra_args"])
            stats = model_statistics(pipeline, batch_size=batch_size, bins=bins, top_k=top_k, desc=f"tokens {name}")
            results[name] = {"model_dir": model_dir, **stats}
            durable.write_json(json_path, {"settings": settings, "models": results})
            del pipeline
    ordered = {name: results[name] for name in models} | results  # command-line order first
    payload = {"settings": settings, "models": ordered}
    durable.write_json(json_path, payload)
    plot_token_histograms(ordered, out_dir / PNG_NAME)
    durable.write_text(out_dir / MD_NAME, lowest_tokens_markdown(ordered, top_k))
    print(f"analyze tokens: wrote {json_path}, {out_dir / PNG_NAME}, {out_dir / MD_NAME}")
    return payload
