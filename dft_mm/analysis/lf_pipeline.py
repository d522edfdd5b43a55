"""LLaMA-Factory's own SFT data path, for analysis: the exact tokens a training run supervises.

:func:`load_sft_pipeline` parses arguments with ``llamafactory.hparams.get_train_args`` (as
``llamafactory-cli train`` does), tokenizes with the template from
``get_template_and_fix_tokenizer`` and the supervised processor behind ``get_dataset``
(prompt tokens masked with ``IGNORE_INDEX``, ``cutoff_len`` truncation, the mm_plugin and
processor for images), loads the model with ``load_model`` (LoRA adapters merged) and builds
the same ``SFTDataCollatorWith4DAttentionMask`` the SFT workflow uses (mrope position ids
for Qwen2-VL-style models). Imports of llamafactory happen inside the function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dft_mm.analysis.dataset_spec import DatasetSpec
from dft_mm.errors import UserError


@dataclass
class SftPipeline:
    """A loaded model with its tokenized dataset and collator (one model's view of the data)."""

    model: Any
    tokenizer: Any
    dataset: Any  # datasets.Dataset of input_ids / attention_mask / labels (+ images, videos, audios)
    collator: Any
    num_raw_samples: int  # rows before LLaMA-Factory's processor (which drops invalid ones)


def model_arguments(model_dir: str) -> dict:
    """``model_name_or_path`` (and the adapter keys for a LoRA output dir) for ``model_dir``."""
    path = Path(model_dir)
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(f"{adapter_config}: no 'base_model_name_or_path'; cannot tell which model the adapter is for.")
        return {"model_name_or_path": base, "adapter_name_or_path": str(path), "finetuning_type": "lora"}
    if not (path / "config.json").is_file():
        raise UserError(f"--model {model_dir}: no config.json or adapter_config.json there; give a model or "
                        "LLaMA-Factory output folder.")
    return {"model_name_or_path": str(path)}


def load_sft_pipeline(
    model_dir: str,
    spec: DatasetSpec,
    template: str,
    work_dir: Path,
    *,
    cutoff_len: int = 2048,
    max_samples: int | None = None,
    dtype: str = "auto",
    extra_args: dict | None = None,
) -> SftPipeline:
    """Tokenize ``spec`` for the model in ``model_dir`` exactly as ``llamafactory-cli train`` would.

    ``work_dir`` is a scratch folder (LLaMA-Factory's ``output_dir``; nothing is saved there).

    ``dtype`` is LLaMA-Factory's ``infer_dtype`` (``auto`` follows the model config and the
    device); ``extra_args`` are further LLaMA-Factory keys (e.g. ``image_max_pixels``,
    ``mask_history``, ``train_on_prompt``) so the analysis matches the training recipe.
    """
    from llamafactory.data import SFTDataCollatorWith4DAttentionMask, get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.loader import _get_merged_dataset
    from llamafactory.extras.constants import IGNORE_INDEX
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    args = {
        **model_arguments(model_dir),
        "stage": "sft",
        "do_train": True,
        "dataset": spec.dataset,
        "dataset_dir": spec.dataset_dir,
        "template": template,
        "cutoff_len": cutoff_len,
        "max_samples": max_samples,
        "infer_dtype": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype),
        "output_dir": str(work_dir),
        "report_to": "none",
        **({"media_dir": spec.media_dir} if spec.media_dir else {}),
        **(extra_args or {}),
    }
    try:
        model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
    except ValueError as err:  # HfArgumentParser: unknown keys / bad values
        raise UserError(f"LLaMA-Factory rejected the analysis arguments: {err}")
    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template_obj = get_template_and_fix_tokenizer(tokenizer, data_args)
    raw = _get_merged_dataset(data_args.dataset, model_args, data_args, training_args, "sft")
    dataset = get_dataset(template_obj, model_args, data_args, training_args, "sft", **tokenizer_module)["train_dataset"]
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
    collator = SFTDataCollatorWith4DAttentionMask(
        template=template_obj,
        model=model,
        label_pad_token_id=IGNORE_INDEX,
        block_diag_attn=model_args.block_diag_attn,
        neat_packing=data_args.neat_packing,
        attn_implementation=getattr(model.config, "_attn_implementation", None),
        compute_dtype=model_args.compute_dtype,
        **tokenizer_module,
    )
    return SftPipeline(model, tokenizer, dataset, collator, len(raw))
