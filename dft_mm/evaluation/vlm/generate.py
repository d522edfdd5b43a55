"""Greedy generation for a VLMEvalKit dataset with a Qwen2.5-VL checkpoint.

Each row becomes one user turn in Qwen2.5-VL's chat format: the image(s) first (through
``qwen_vl_utils.process_vision_info`` with ``min_pixels`` / ``max_pixels``, as VLMEvalKit's
``Qwen2VLChat`` does), then the prompt of :mod:`dft_mm.evaluation.vlm.prompts`, after a
system turn with ``system_prompt`` (default: the WeThink prompt the paper's models were trained
with; ``None`` leaves the chat template's default). Backends: HF transformers
(batched, left padding) and vLLM (used by ``backend="auto"`` when importable with a GPU).

The settings travel as one :class:`GenerationSettings` (``dft-mm eval vlm generate`` and
``run`` build it from their options; ``run`` hands it on unchanged).

Output: ``<out>/<model>_<dataset>.tsv`` in VLMEvalKit's prediction format, resumable, and
``<model>_<dataset>.generation.json`` with the settings (system prompt included).

Example::

    generate("Qwen/Qwen2.5-VL-3B-Instruct", "MathVision_MINI", "out/")
    generate("saves/dft", "held_out.tsv", "out/", GenerationSettings(backend="hf", system_prompt=None))
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from dft_mm.data.wethink import WETHINK_SYSTEM_PROMPT
from dft_mm.errors import UserError

DEFAULT_MIN_PIXELS = 1280 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28
DEFAULT_MAX_NEW_TOKENS = 2048
BACKENDS = ("auto", "hf", "vllm")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class GenerationSettings:
    """How :func:`generate` generates: one value per ``dft-mm eval vlm generate`` option
    (``--a-b`` -> ``a_b``) besides ``--model``, ``--dataset`` and ``--out``.

    ``system_prompt``, the pixel bounds and ``max_new_tokens`` (with the model) are recorded
    beside the predictions; a rerun with others is refused.
    """

    data_root: str | Path | None = None  # folder of <name>.tsv files (None: $LMUData or ~/LMUData)
    backend: str = "auto"  # one of BACKENDS
    batch_size: int = 8  # rows per generate call (vLLM takes at least VLLMBackend.min_batch)
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    model_name: str | None = None  # name in file names and the table (None: the model folder's name)
    limit: int | None = None  # only the first N rows (smoke tests)
    system_prompt: str | None = WETHINK_SYSTEM_PROMPT  # None: the chat template's default


def build_messages(images: list, text: str, min_pixels: int, max_pixels: int,
                   system_prompt: str | None = None) -> list[dict]:
    """An optional system turn, then one user turn: every image (with its pixel bounds) then the text."""
    content = [{"type": "image", "image": image, "min_pixels": min_pixels, "max_pixels": max_pixels}
               for image in images]
    content.append({"type": "text", "text": text})
    system = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return [*system, {"role": "user", "content": content}]


class HFBackend:
    """transformers ``AutoModelForImageTextToText`` + ``AutoProcessor``, batched greedy decoding."""

    min_batch = 1

    def __init__(self, model_path: str, max_new_tokens: int):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_path)
        self.processor.tokenizer.padding_side = "left"
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        attention = "sdpa"
        if self.device == "cuda":
            try:
                import flash_attn  # noqa: F401

                attention = "flash_attention_2"
            except ImportError:
                pass
        self.model = AutoModelForImageTextToText.from_pretrained(
            model_path, dtype="auto", attn_implementation=attention
        ).to(self.device).eval()
        self.max_new_tokens = max_new_tokens

    def generate(self, conversations: list[list[dict]]) -> list[str]:
        """Greedy completions for a batch of conversations (one string each)."""
        import torch
        from qwen_vl_utils import process_vision_info

        texts = [self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
                 for conversation in conversations]
        images, _ = process_vision_info(conversations)
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class VLLMBackend:
    """vLLM offline engine with the same prompts and images (temperature 0)."""

    min_batch = 256  # vLLM schedules its own batches: hand it many requests per call

    def __init__(self, model_path: str, max_new_tokens: int, max_images: int = 8):
        from transformers import AutoProcessor
        from vllm import LLM, SamplingParams

        self.processor = AutoProcessor.from_pretrained(model_path)
        self.llm = LLM(model=model_path, max_model_len=32768, limit_mm_per_prompt={"image": max_images})
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def generate(self, conversations: list[list[dict]]) -> list[str]:
        """Greedy completions for a batch of conversations (one string each)."""
        from qwen_vl_utils import process_vision_info

        requests = []
        for conversation in conversations:
            images, _ = process_vision_info(conversation)
            text = self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
            requests.append({"prompt": text, "multi_modal_data": {"image": images}})
        outputs = self.llm.generate(requests, self.params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]


@functools.lru_cache(maxsize=1)
def make_backend(backend: str, model_path: str, max_new_tokens: int):
    """``hf``, ``vllm``, or ``auto`` (vLLM when it imports and a GPU is present, else HF).

    The last backend stays loaded, so ``run`` loads the model once for all its datasets."""
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        import importlib.util

        import torch

        backend = "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "hf"
    if backend == "vllm":
        try:
            return VLLMBackend(model_path, max_new_tokens)
        except ImportError as err:
            raise UserError(f"--backend vllm: {err}; install it with `pip install 'dft_mm[vllm]'`") from err
    return HFBackend(model_path, max_new_tokens)


def generate(model: str, dataset: str, out: str | Path, settings: GenerationSettings = GenerationSettings()) -> Path:
    """Generate (or finish generating) predictions; returns the prediction TSV path.

    ``settings.limit`` keeps the first N rows (smoke tests). Rows already in the file are
    skipped; a file generated with other settings (system prompt, pixels, max_new_tokens) is
    refused.
    """
    from tqdm import tqdm

    from dft_mm.evaluation.vlm.datasets import load_dataset
    from dft_mm.evaluation.vlm.predictions import (
        PredictionWriter,
        check_generation_record,
        prediction_columns,
        prediction_filename,
    )
    from dft_mm.evaluation.vlm.prompts import build_prompt

    if settings.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {settings.batch_size}")
    min_pixels, max_pixels = settings.min_pixels, settings.max_pixels
    if not (0 < min_pixels <= max_pixels):
        raise UserError(f"pixel bounds must satisfy 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
    if not Path(model).is_dir() and not _HUB_ID.fullmatch(str(model)):
        raise UserError(f"--model {model}: no such checkpoint folder (nor a Hugging Face id like Qwen/Qwen2.5-VL-3B-Instruct)")
    data = load_dataset(dataset, settings.data_root)
    rows = data.rows[:settings.limit] if settings.limit else data.rows
    name = settings.model_name or Path(str(model).rstrip("/")).name
    path = Path(out) / prediction_filename(name, data.name)
    # refuse other settings before the writer touches the file (it drops incomplete records)
    check_generation_record(path, {"model": str(model), "system_prompt": settings.system_prompt,
                                   "min_pixels": min_pixels, "max_pixels": max_pixels,
                                   "max_new_tokens": settings.max_new_tokens})
    writer = PredictionWriter(path, prediction_columns(data.columns))
    if writer.dropped_partial:
        print(f"{path}: dropped {writer.dropped_partial} incomplete record(s) from an interrupted run; regenerating")
    todo = [row for row in rows if row["index"] not in writer.done]
    if not todo:
        return path
    engine = make_backend(settings.backend, str(model), settings.max_new_tokens)
    chunk = max(settings.batch_size, engine.min_batch)
    with tqdm(total=len(rows), initial=len(rows) - len(todo), desc=f"generate {data.name}", unit="q") as bar:
        for start in range(0, len(todo), chunk):
            batch = todo[start:start + chunk]
            conversations = [build_messages(data.images(row), build_prompt(row, data.spec), min_pixels, max_pixels,
                                            settings.system_prompt) for row in batch]
            for row, prediction in zip(batch, engine.generate(conversations)):
                writer.write(row, prediction)
            bar.update(len(batch))
    return path
