"""Question text and answer options of a benchmark row, as VLMEvalKit builds them.

Prompts follow VLMEvalKit's dataset ``build_prompt`` with ``use_custom_prompt=False`` (the
Qwen2VLChat setting of the paper): the image(s) come first, then this text.

- MathVerse: the ``question`` column (``query_cot`` for the ``_cot`` datasets).
- MathVision and custom TSVs: the ``question`` column.
- WeMath: ``Hint: ...`` (when present), ``Question: ...``, then ``Options:`` and one
  ``<letter>. <text>`` line per option column.

The system turn is an option (``--system-prompt``): ``wethink`` (default) is the WeThink
converter's prompt that the paper's SFT/DFT models were trained with (VLMEvalKit's
``WeThink-Qwen2.5VL-7B`` entry sets the same), ``none`` sends no system turn (the chat
template's default applies), any other text is sent as is.
"""

from __future__ import annotations

import ast
import re
import string

from dft_mm.data.wethink import WETHINK_SYSTEM_PROMPT
from dft_mm.evaluation.vlm.datasets import MATHVERSE, WEMATH, DatasetSpec

SYSTEM_PROMPT_CHOICES = {"wethink": WETHINK_SYSTEM_PROMPT, "none": None}

# MathVerse keeps its options inside the question text: "Choices:\nA:2\nB:2√{3}" and variants.
_CHOICE_LINE = re.compile(r"^\s*\(?([A-H])\)?\s*[:.：)]\s*(.+?)\s*$")


def resolve_system_prompt(value: str | None) -> str | None:
    """``--system-prompt`` value -> the text sent (``wethink`` / ``none`` / literal text)."""
    if value is None:
        return None
    key = value.strip().lower()
    return SYSTEM_PROMPT_CHOICES[key] if key in SYSTEM_PROMPT_CHOICES else value


def build_prompt(row: dict, spec: DatasetSpec) -> str:
    """The text VLMEvalKit sends after the image(s) for ``row``."""
    if spec.benchmark == MATHVERSE:
        return row["query_cot"] if "cot" in spec.name else row["question"]
    if spec.benchmark == WEMATH:
        prompt = f"Hint: {row['hint']}\n" if row.get("hint") else ""
        prompt += f"Question: {row['question']}\n"
        options = wemath_options(row)
        if options:
            prompt += "Options:\n" + "".join(f"{key}. {value}\n" for key, value in options.items())
        return prompt
    return row["question"]


def wemath_options(row: dict) -> dict[str, str]:
    """WeMath option columns ``A``, ``B`` ... that are filled in, in letter order."""
    return {letter: str(row[letter]) for letter in string.ascii_uppercase if row.get(letter) is not None}


def _list_options(cell) -> dict[str, str]:
    """MathVision ``choices``: a list literal (empty for free-form questions)."""
    if not cell:
        return {}
    try:
        values = ast.literal_eval(cell) if isinstance(cell, str) else cell
    except (ValueError, SyntaxError):
        return {}
    if not isinstance(values, (list, tuple)):
        return {}
    return {string.ascii_uppercase[i]: str(value) for i, value in enumerate(values)}


def _question_options(question: str) -> dict[str, str]:
    """Options listed after a ``Choices`` / ``Options`` line in a question's text."""
    lines = question.splitlines()
    for start, line in enumerate(lines):
        if re.match(r"^\s*(choices|options)\s*:?\s*$", line, flags=re.IGNORECASE):
            options = {}
            for candidate in lines[start + 1:]:
                match = _CHOICE_LINE.match(candidate)
                if match:
                    options[match.group(1)] = match.group(2)
            return options
    return {}


def answer_options(row: dict, spec: DatasetSpec) -> dict[str, str] | None:
    """Options ``{letter: text}`` of a multiple-choice row, ``None`` for a free-form one."""
    if spec.benchmark == WEMATH:
        return wemath_options(row) or None
    if spec.benchmark == MATHVERSE:
        if str(row.get("question_type") or "").lower() != "multi-choice":
            return None
        text = row.get("question_for_eval") or row.get("question") or ""
        options = _question_options(text)
        # Vision-only rows show the options in the image; the letter is all we can check.
        return options or {letter: "" for letter in "ABCDE"}
    return _list_options(row.get("choices")) or None
