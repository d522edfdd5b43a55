"""Rule-based final-answer extraction from a model response (no judge model).

Rules, first hit wins:

1. ``<answer>...</answer>`` (the last one; a ``\\boxed{}`` inside it is unwrapped),
2. the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces handled),
3. an answer phrase: "final answer is/:", "the answer is", "correct option is", a line
   starting with "Answer:" (the last one in the text),
4. multiple choice only: a lone option letter ("(B)", "B.", "B") or exactly one option's
   text quoted in the response,
5. the last mathematical expression (``$...$``, ``\\(...\\)``, or a number),
6. a short response (at most 40 characters) taken whole.

For a multiple-choice row the candidate is then mapped to an option letter (letter, option
text, or a mathematically equal option); a candidate naming several options is ambiguous
and maps to nothing.

Example::

    >>> extract_answer("So the total is \\\\boxed{\\\\frac{1}{2}}.").answer
    '\\\\frac{1}{2}'
    >>> extract_answer("The answer is (B).", {"A": "3", "B": "4"}).answer
    'B'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_PHRASES = (
    re.compile(r"final answer(?:\s*is)?\s*[:：]?\s*(.+)", re.IGNORECASE),
    re.compile(r"(?:the|my)\s+(?:correct\s+|final\s+)?(?:answer|option|choice)\s+(?:is|should be|would be)\s*:?\s*(.+)", re.IGNORECASE),
    re.compile(r"^\s*\**answer\**\s*[:：]\s*(.+)", re.IGNORECASE | re.MULTILINE),
)
_LETTER_ONLY = re.compile(r"^\s*[\(\[]?\s*([A-H])\s*[\)\]]?\s*(?:[.:：,)]|$|\s)", re.DOTALL)
# A capital A-H standing alone (not inside a word or a LaTeX command).
_LETTER_MENTION = re.compile(r"(?<![A-Za-z\\])([A-H])(?![A-Za-z])")
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?")
_SHORT_RESPONSE = 40


@dataclass(frozen=True)
class Extraction:
    """``answer``: the extracted final answer (an option letter for multiple choice) or None.
    ``method``: which rule produced it (``tag``, ``boxed``, ``phrase``, ``option``,
    ``last_expression``, ``whole``, ``judge``) or why nothing was found (``empty``, ``none``,
    ``ambiguous``, ``judge_none``: the judge saw no single final answer)."""

    answer: str | None
    method: str


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or None."""
    starts = list(_BOX_START.finditer(text))
    for match in reversed(starts):
        depth, begin = 1, match.end()
        for position in range(begin, len(text)):
            if text[position] == "{":
                depth += 1
            elif text[position] == "}":
                depth -= 1
                if depth == 0:
                    return text[begin:position].strip()
    return None


def _clean(candidate: str) -> str:
    """Trim a phrase capture: one line, no surrounding markup or final full stop."""
    candidate = candidate.strip().splitlines()[0] if candidate.strip() else ""
    boxed = last_boxed(candidate)
    if boxed is not None:
        return boxed
    candidate = re.sub(r"[.。]+$", "", candidate.strip().strip("*").strip()).strip()
    if candidate.startswith("$") and candidate.endswith("$") and len(candidate) > 1:
        candidate = candidate.strip("$").strip()
    return candidate


def _phrase(text: str) -> str | None:
    best = None
    for pattern in _PHRASES:
        for match in pattern.finditer(text):
            if best is None or match.start() > best.start():
                best = match
    if best is None:
        return None
    return _clean(best.group(1)) or None


def _last_expression(text: str) -> str | None:
    spans = [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in _MATH_SPAN.finditer(text)]
    numbers = [(m.start(), m.end(), m.group(0)) for m in _NUMBER.finditer(text)
               if not any(start <= m.start() < end for start, end, _ in spans)]
    found = [(start, value) for start, _, value in spans + numbers]
    if not found:
        return None
    return max(found, key=lambda item: item[0])[1].strip()


def _normalise(text: str) -> str:
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    text = text.replace("\\left", "").replace("\\right", "").replace("$", "")
    return re.sub(r"[\s.。]+", "", text).lower()


def to_option_letter(candidate: str, options: dict[str, str]) -> str | None:
    """Map an extracted candidate to one option letter, or None (no or several options named)."""
    match = _LETTER_ONLY.match(candidate)
    if match and match.group(1) in options:
        rest = candidate[match.end():].strip()
        if not rest or not _mentioned_letters(rest, options):
            return match.group(1)
    texts = {letter: _normalise(value) for letter, value in options.items() if value and _normalise(value)}
    exact = [letter for letter, value in texts.items() if value == _normalise(candidate)]
    if len(exact) == 1:
        return exact[0]
    letters = _mentioned_letters(candidate, options)
    if len(letters) == 1:
        return letters.pop()
    if not letters:
        from dft_mm.evaluation.vlm.compare import equivalent

        equal = [letter for letter, value in options.items() if value and equivalent(candidate, value)]
        if len(equal) == 1:
            return equal[0]
    return None


def _mentioned_letters(text: str, options: dict[str, str]) -> set[str]:
    return set(_LETTER_MENTION.findall(text)) & set(options)


def _option_in_response(text: str, options: dict[str, str]) -> str | None:
    """A lone option letter in a short response and/or the one option whose text is quoted;
    None when they disagree ("A square" with B = "square") or name several options."""
    letters = _mentioned_letters(text, options) if len(text) <= _SHORT_RESPONSE else set()
    quoted = {letter for letter, value in options.items()
              if value and len(_normalise(value)) > 1 and _normalise(value) in _normalise(text)}
    found = letters | quoted
    return found.pop() if len(found) == 1 else None


def extract_answer(prediction: str | None, options: dict[str, str] | None = None) -> Extraction:
    """Apply the rules to ``prediction``; ``options`` (letter -> text) marks multiple choice."""
    text = (prediction or "").strip()
    if not text:
        return Extraction(None, "empty")
    candidate, method = None, "none"
    tags = _ANSWER_TAG.findall(text)
    if tags:
        candidate, method = _clean(tags[-1]) or None, "tag"
    if candidate is None and (boxed := last_boxed(text)) is not None:
        candidate, method = boxed, "boxed"
    if candidate is None and (phrase := _phrase(text)) is not None:
        candidate, method = phrase, "phrase"
    if options:
        if candidate is not None:
            letter = to_option_letter(candidate, options)
            return Extraction(letter, method) if letter else Extraction(None, "ambiguous")
        letter = _option_in_response(text, options)
        return Extraction(letter, "option") if letter else Extraction(None, "none")
    if candidate is None and (expression := _last_expression(text)) is not None:
        candidate, method = expression, "last_expression"
    if candidate is None and len(text) <= _SHORT_RESPONSE:
        candidate, method = _clean(text), "whole"
    return Extraction(candidate, method) if candidate else Extraction(None, "none")
