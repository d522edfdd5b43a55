"""WeThink -> LLaMA-Factory multimodal sharegpt data (the DFT paper's multimodal setup).

Rows of ``yangjie-cv/WeThink_Multimodal_Reasoning_120K`` (``problem, answer, category,
abilities, refined_cot, image_path, reward``) become::

    {"messages": [{"role": "user", "content": "<image>" + problem},
                  {"role": "assistant", "content": "<think>\\n...\\n</think>\\n<answer>...</answer>"}],
     "images": ["/abs/path/to/image.jpg"], "system": WETHINK_SYSTEM_PROMPT}

``image_path`` (a string or a list) is relative to ``image_root`` (the extracted image
archive) and written as an absolute path. The assistant turn follows WeThink's
``<think>``/``<answer>`` format; tags already present in ``refined_cot`` are reused, never
doubled. ``<image>`` written literally inside the problem is used as the image position when
it occurs once per image and escaped to ``[image]`` otherwise, so LLaMA-Factory's check
"number of images == number of <image> tokens" holds.

Example::

    dft-mm data wethink --input yangjie-cv/WeThink_Multimodal_Reasoning_120K \\
        --image-root /data/wethink_images --out data/wethink
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dft_mm.data.io import (
    ConversionStats,
    RowError,
    add_io_arguments,
    convert_rows,
    open_rows,
    print_stats,
    write_outputs,
)
from dft_mm.errors import UserError

# The system prompt WeThink's reference inference code uses (the model expects it).
WETHINK_SYSTEM_PROMPT = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer.\n"
    "The reasoning process MUST BE enclosed within <think> </think> tags. "
    "The final answer MUST BE enclosed within <answer> </answer> tags."
)
DATASET_NAME = "wethink"
FILE_NAME = "wethink_sharegpt.jsonl"
DATASET_INFO_ENTRY = {
    "file_name": FILE_NAME,
    "formatting": "sharegpt",
    "columns": {"messages": "messages", "images": "images", "system": "system"},
    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
}
MEDIA_KINDS = ("image", "video", "audio")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_STRAY_TAG = re.compile(r"</?(?:think|answer)>")


def media_placeholder(kind: str) -> str:
    """LLaMA-Factory's ``<image>``/``<video>``/``<audio>`` token (its ``*_PLACEHOLDER`` environment
    overrides included)."""
    return os.environ.get(f"{kind.upper()}_PLACEHOLDER", f"<{kind}>")


def escape_media_tags(text: str, kinds: tuple[str, ...], part: str, stats: ConversionStats) -> str:
    """Rewrite literal media tokens of ``kinds`` in ``text`` to ``[kind]`` so that LLaMA-Factory
    does not count them as media; each rewrite is noted as ``<kind>_tag_in_<part>_escaped``."""
    for kind in kinds:
        tag = media_placeholder(kind)
        if tag in text:
            stats.note(f"{kind}_tag_in_{part}_escaped")
            text = text.replace(tag, f"[{kind}]")
    return text


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RowError(f"malformed_row: {key} is not text")
    return value.strip()


def assistant_turn(refined_cot: str, answer: str, stats: ConversionStats) -> str:
    """``<think>reasoning</think>`` + ``<answer>final</answer>``, reusing tags already in the CoT.

    The answer inside an existing ``<answer>`` block of ``refined_cot`` wins over ``answer``;
    media tokens in the text are escaped (the assistant turn carries no media).
    """
    think_match = _THINK.search(refined_cot)
    answer_match = _ANSWER.search(refined_cot)
    if think_match:
        stats.note("cot_had_think_tags")
        reasoning = think_match.group(1)
    else:
        reasoning = refined_cot[: answer_match.start()] if answer_match else refined_cot
    if answer_match:
        stats.note("cot_had_answer_tags")
        answer = answer_match.group(1).strip() or answer
    reasoning = _STRAY_TAG.sub("", reasoning).strip()
    return escape_media_tags(f"<think>\n{reasoning}\n</think>\n<answer>{answer}</answer>", MEDIA_KINDS, "cot", stats)


def user_turn(problem: str, num_images: int, stats: ConversionStats) -> str:
    """Problem text with exactly ``num_images`` image placeholders (and no video/audio ones)."""
    problem = escape_media_tags(problem, ("video", "audio"), "problem", stats)
    found = problem.count(media_placeholder("image"))
    if found == num_images:
        stats.note("image_tag_in_problem_used_as_position")
        return problem
    return media_placeholder("image") * num_images + escape_media_tags(problem, ("image",), "problem", stats)


def _image_paths(row: dict[str, Any], image_root: Path) -> list[str]:
    value = row.get("image_path")
    relative = [value] if isinstance(value, str) else value
    if not isinstance(relative, list) or not relative or not all(isinstance(p, str) and p.strip() for p in relative):
        raise RowError("missing_image_path")
    return [os.path.abspath(image_root / p.strip()) for p in relative]


def _check_image(path: str) -> None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # any decoding failure makes the row unusable for training
        raise RowError("unreadable_image") from err


def convert_row(row: dict[str, Any], image_root: Path, stats: ConversionStats,
                check_images: bool = False, system_prompt: str = WETHINK_SYSTEM_PROMPT) -> dict[str, Any]:
    """One WeThink row -> one sharegpt record (raises :class:`RowError`)."""
    problem, answer, cot = _text(row, "problem"), _text(row, "answer"), _text(row, "refined_cot")
    if not problem:
        raise RowError("empty_problem")
    if not answer:
        raise RowError("empty_answer")
    if not cot:
        raise RowError("empty_refined_cot")
    images = _image_paths(row, image_root)
    for path in images:
        if not os.path.isfile(path):
            raise RowError("missing_image")
        if check_images:
            _check_image(path)
    record = {
        "messages": [
            {"role": "user", "content": user_turn(problem, len(images), stats)},
            {"role": "assistant", "content": assistant_turn(cot, answer, stats)},
        ],
        "images": images,
    }
    if system_prompt:
        record["system"] = system_prompt
    return record


def convert_wethink(input: str, image_root: str | Path, out: str | Path, limit: int | None = None,
                    check_images: bool = False, system_prompt: str = WETHINK_SYSTEM_PROMPT,
                    split: str = "train") -> dict[str, Any]:
    """Convert WeThink at ``input`` (file, directory or HF id) into ``out``; returns the stats.

    ``limit`` stops after that many kept rows. ``check_images`` decodes every image with PIL
    (slower) instead of only checking that the file exists.
    """
    image_root = Path(image_root).expanduser()
    if not image_root.is_dir():
        raise UserError(f"--image-root {image_root}: not a directory; extract WeThink's image archive and "
                        "pass the folder that image_path values are relative to")
    stats = ConversionStats()
    rows, total = open_rows(input, split=split)
    records = convert_rows(rows, total, "wethink",
                           lambda data: convert_row(data, image_root, stats, check_images, system_prompt),
                           stats, limit=limit)
    if not records:
        raise UserError(f"{input}: no usable WeThink rows (skipped: {dict(stats.skipped)}); check --image-root "
                        "and that rows have problem, answer, refined_cot, image_path")
    stats.kept = len(records)
    result = stats.to_dict()
    result.update(limit=limit, check_images=check_images, image_root=str(image_root.resolve()))
    info = {DATASET_NAME: dataset_info_entry(bool(system_prompt))}
    write_outputs(Path(out), FILE_NAME, records, info, result)
    return result


def dataset_info_entry(with_system: bool = True) -> dict[str, Any]:
    """The LLaMA-Factory ``dataset_info.json`` entry for the output (without ``system`` when no prompt)."""
    entry = {**DATASET_INFO_ENTRY, "columns": dict(DATASET_INFO_ENTRY["columns"])}
    if not with_system:
        del entry["columns"]["system"]
    return entry


def _cli(args) -> int:
    stats = convert_wethink(args.input, args.image_root, args.out, limit=args.limit, check_images=args.check_images,
                            system_prompt=args.system_prompt, split=args.split)
    print_stats("wethink", stats)
    print(f"  -> {Path(args.out) / FILE_NAME}")
    return 0


def register(data_subparsers) -> None:
    """Add ``data wethink`` to the ``data`` sub-verb parsers."""
    parser = data_subparsers.add_parser(
        "wethink", help="WeThink -> multimodal sharegpt data (JSONL)",
        description="Convert WeThink rows to LLaMA-Factory sharegpt rows with <think>/<answer> targets.")
    add_io_arguments(parser, "yangjie-cv/WeThink_Multimodal_Reasoning_120K")
    parser.add_argument("--image-root", required=True, help="folder that the rows' image_path values are relative to")
    parser.add_argument("--limit", type=int, default=None, help="stop after N kept rows")
    parser.add_argument("--check-images", action="store_true", help="decode every image with PIL (slower)")
    parser.add_argument("--system-prompt", default=WETHINK_SYSTEM_PROMPT,
                        help="system prompt for every row ('' for none; default: WeThink's)")
    parser.set_defaults(handler=_cli)
