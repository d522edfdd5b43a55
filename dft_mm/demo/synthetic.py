"""Small synthetic tasks a tiny model can learn on a CPU in minutes (demo and tests).

* Text: write a one-line Python function from its docstring (``Return x plus 3.`` ->
  ``return x + 3``). Training rows are LLaMA-Factory alpaca records (template ``empty``) whose
  instruction is the completion-mode prompt; the held-out set is a MultiPL-E-format JSONL scored by the real
  MultiPL-E scorer. :func:`corrupt_constants` makes the *noisy demonstrations* of the demo's
  second regime: a fraction of the completions get a wrong constant (``return x + 7`` for
  "plus 3").
* Vision-language: name the colour of the shape in a drawn image. Training rows are
  LLaMA-Factory sharegpt records in the WeThink converter's format
  (``<think>...</think><answer>...</answer>``) with the template's default system prompt, as
  VLMEvalKit prompts Qwen2.5-VL; the held-out set is written as a VLMEvalKit-format TSV
  (:func:`dft_mm.evaluation.vlm.datasets.write_dataset_tsv`) and scored by the built-in scorer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OPERATIONS = (("plus", "+"), ("minus", "-"), ("times", "*"))
FUNCTION_NAMES = ("shift", "scale", "adjust", "apply", "compute", "transform", "update", "step")
PYTHON_STOP_TOKENS = ["\ndef", "\n#", "\nif", "\nclass"]
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "yellow": (235, 210, 20)}
SHAPES = ("square", "circle", "triangle")


def text_problems(count: int, seed: int) -> list[dict]:
    """``count`` distinct function-writing problems: name, prompt, completion, tests."""
    combos = [(n, op, k) for n in FUNCTION_NAMES for op in OPERATIONS for k in range(10)]
    rng = random.Random(seed)
    rng.shuffle(combos)
    if count > len(combos):
        raise ValueError(f"at most {len(combos)} distinct text problems; asked for {count}")
    problems = []
    for index, (name, (word, symbol), k) in enumerate(combos[:count]):
        prompt = f'def {name}(x):\n    """Return x {word} {k}."""\n'
        expected = {"+": lambda x: x + k, "-": lambda x: x - k, "*": lambda x: x * k}[symbol]
        asserts = "".join(f"    assert candidate({x}) == {expected(x)}\n" for x in (0, 1, 7, -4))
        problems.append(
            {
                "name": f"synthetic_{index}_{name}",
                "prompt": prompt,
                "completion": f"    return x {symbol} {k}\n",
                "symbol": symbol,
                "constant": k,
                "tests": f"\n\ndef check(candidate):\n{asserts}\ndef test_check():\n    check({name})\n\ntest_check()\n",
            }
        )
    return problems


def split_sizes(problems: list[dict], sizes: dict[str, int]) -> dict[str, list[dict]]:
    """Consecutive disjoint splits, e.g. ``{"warm": 80, "demos": 80, "validation": 40, "heldout": 40}``."""
    if sum(sizes.values()) > len(problems):
        raise ValueError(f"splits {sizes} need {sum(sizes.values())} problems; got {len(problems)}")
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name], start = problems[start:start + size], start + size
    return splits


def corrupt_constants(problems: list[dict], fraction: float, seed: int) -> list[dict]:
    """Copies of ``problems`` where ``round(fraction * len)`` of them, drawn with ``seed``, carry a
    wrong constant (uniform over the other nine digits); those get ``"corrupted": True``.

    Only the completion (the demonstration) changes; prompt and tests stay those of the task.

    >>> rows = corrupt_constants(text_problems(10, seed=0), 0.4, seed=1)
    >>> sum(row["corrupted"] for row in rows)
    4
    """
    rng = random.Random(seed)
    wrong = set(rng.sample(range(len(problems)), round(fraction * len(problems))))
    rows = []
    for index, problem in enumerate(problems):
        row = {**problem, "corrupted": index in wrong}
        if row["corrupted"]:
            constant = rng.choice([k for k in range(10) if k != problem["constant"]])
            row["completion"] = f"    return x {problem['symbol']} {constant}\n"
        rows.append(row)
    return rows


def write_text_training_set(problems: list[dict], out_dir: Path, name: str = "synthetic_code") -> Path:
    """Alpaca JSON + ``dataset_info.json`` entry ``name`` (LLaMA-Factory ``dataset_dir`` = out_dir)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Completion mode, as MultiPL-E prompts base models: the prompt verbatim, then the body,
    # then the start of the next function (a MultiPL-E stop token), so the model learns to stop.
    rows = [{"instruction": p["prompt"], "input": "", "output": p["completion"] + "\n\ndef"} for p in problems]
    (out_dir / f"{name}.json").write_text(json.dumps(rows, indent=1))
    _add_dataset_info(out_dir, name, {"file_name": f"{name}.json"})
    return out_dir / f"{name}.json"


def write_multipl_e_jsonl(problems: list[dict], path: Path) -> Path:
    """Held-out problems in the MultiPL-E dataset format (python)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for p in problems:
            record = {
                "name": p["name"],
                "language": "py",
                "prompt": p["prompt"],
                "doctests": "keep",
                "original": "synthetic",
                "prompt_terminology": "verbatim",
                "tests": p["tests"],
                "stop_tokens": PYTHON_STOP_TOKENS,
            }
            handle.write(json.dumps(record) + "\n")
    return path


def draw_shape(colour: str, shape: str, size: int, rng: random.Random):
    """A ``size`` x ``size`` RGB PIL image: one filled shape on white, jittered."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    margin = rng.randint(2, size // 6)
    box = (margin, margin, size - 1 - rng.randint(2, size // 6), size - 1 - rng.randint(2, size // 6))
    fill = COLOURS[colour]
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=fill)
    return image


def vl_problems(count: int, seed: int, image_dir: Path, size: int = 56) -> list[dict]:
    """``count`` colour questions with their images saved as PNG under ``image_dir``."""
    rng = random.Random(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    problems = []
    for index in range(count):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        path = image_dir / f"{seed}_{index}.png"
        draw_shape(colour, shape, size, rng).save(path)
        problems.append(
            {
                "index": index,
                "image_path": str(path.resolve()),
                "question": "What colour is the shape in the image?",
                "answer": colour,
                "reasoning": f"The {shape} is filled with {colour}.",
            }
        )
    return problems


def write_vl_heldout_tsv(problems: list[dict], path: Path) -> Path:
    """Colour problems (from :func:`vl_problems`) as a VLMEvalKit-format TSV at ``path``."""
    from PIL import Image

    from dft_mm.evaluation.vlm.datasets import write_dataset_tsv

    rows = [{"index": p["index"], "image": Image.open(p["image_path"]), "question": p["question"], "answer": p["answer"],
             "category": "colour"} for p in problems]
    return write_dataset_tsv(path, rows)


def write_vl_training_set(problems: list[dict], out_dir: Path, name: str = "synthetic_colours") -> Path:
    """Sharegpt JSON (``messages`` + ``images``) + ``dataset_info.json`` entry ``name``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "messages": [
                {"role": "user", "content": "<image>" + p["question"]},
                {"role": "assistant", "content": f"<think>{p['reasoning']}</think><answer>{p['answer']}</answer>"},
            ],
            "images": [p["image_path"]],
        }
        for p in problems
    ]
    (out_dir / f"{name}.json").write_text(json.dumps(rows, indent=1))
    entry = {
        "file_name": f"{name}.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"},
    }
    _add_dataset_info(out_dir, name, entry)
    return out_dir / f"{name}.json"


def _add_dataset_info(out_dir: Path, name: str, entry: dict) -> None:
    info_path = out_dir / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[name] = entry
    info_path.write_text(json.dumps(info, indent=2))
