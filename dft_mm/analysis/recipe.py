"""Read the data-side keys of a LLaMA-Factory training recipe (YAML), for ``--recipe``.

The analysis then tokenizes with the recipe's own template, ``cutoff_len``, dataset,
image/video pixel bounds, ``mask_history``, ``train_on_prompt``, ... Kept: every
``DataArguments`` and ``ProcessorArguments`` key of LLaMA-Factory except the ones about
evaluation sets, streaming and pre-tokenized caches, plus ``trust_remote_code``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dft_mm.errors import UserError

LEFT_OUT = {"eval_dataset", "eval_on_each_dataset", "eval_num_beams", "streaming", "buffer_size",
            "tokenized_path", "data_shared_file_system", "media_dir"}


def data_keys() -> set[str]:
    """Names of the LLaMA-Factory arguments that decide which tokens are supervised."""
    from llamafactory.hparams.data_args import DataArguments
    from llamafactory.hparams.model_args import ProcessorArguments

    names = {f.name for cls in (DataArguments, ProcessorArguments) for f in dataclasses.fields(cls)}
    return (names - LEFT_OUT) | {"trust_remote_code"}


def recipe_data_args(path: str) -> dict:
    """The recipe's data-side keys (``{}`` for none); :class:`UserError` if it is not a YAML mapping."""
    import yaml

    recipe = Path(path)
    try:
        loaded = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"--recipe {path}: cannot read it as YAML ({err}).")
    if not isinstance(loaded, dict):
        raise UserError(f"--recipe {path}: expected a LLaMA-Factory YAML mapping of keys to values.")
    keys = data_keys()
    return {key: value for key, value in loaded.items() if key in keys}
