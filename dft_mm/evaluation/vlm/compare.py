"""Is an extracted answer right? Option letters compare exactly; free-form answers compare
as normalised strings first, then with ``math-verify`` (LaTeX / expressions, numbers to
6 significant decimals, units such as ``^\\circ`` dropped, intervals, equations).

Example::

    >>> equivalent("0.5", "\\\\frac{1}{2}")
    True
    >>> is_hit("B", "B", {"A": "3", "B": "4"})
    True
"""

from __future__ import annotations

import re
import threading

_TIMEOUT_S = 5


def _normalise(text: str) -> str:
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", str(text))
    text = text.replace("\\left", "").replace("\\right", "").replace("$", "").replace("\\!", "")
    return re.sub(r"[\s。]+", "", text).rstrip(".").lower()


# A plain-text unit after a number ("12 cm^2", "5 square units", "30%"), dropped on a second
# try. Only known unit words: a variable such as the x of "2x" must never be dropped.
_UNITS = ("mm|cm|dm|km|m|in|inch|inches|ft|feet|foot|yd|yards?|miles?|meters?|metres?|centimeters?|centimetres?|"
          "millimeters?|kilometers?|units?|degrees?|deg|kg|g|grams?|seconds?|sec|s|minutes?|min|hours?|h|ml|l|"
          "liters?|litres?|yuan|dollars?|cents?|px|pixels?|cm2|m2")
_UNIT_SUFFIX = re.compile(
    rf"(?<=[\d}}])(?:\s*(?:%|\\%)|\s+(?:square\s+|cubic\s+|sq\.?\s+)?(?:{_UNITS})(?:\^\{{?[23]\}}?|²|³)?)\s*$", re.IGNORECASE
)


def _timeout() -> int | None:
    """math-verify times out with ``signal.alarm``: main thread only; elsewhere no timeout."""
    return _TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse(text: str) -> list:
    """math-verify's parse of ``text`` as LaTeX math (wrapped in $...$) or, failing that, as is."""
    from math_verify import parse

    return parse(f"${text}$", parsing_timeout=_timeout()) or parse(text, parsing_timeout=_timeout())


def equivalent(prediction: str, gold: str) -> bool:
    """True when ``prediction`` and ``gold`` are the same answer (string or mathematically)."""
    if prediction is None or gold is None:
        return False
    if _normalise(prediction) == _normalise(gold):
        return True
    from math_verify import verify

    gold_parsed = _parse(str(gold))
    if not gold_parsed:
        return False
    for candidate in dict.fromkeys([str(prediction), _UNIT_SUFFIX.sub("", str(prediction))]):
        parsed = _parse(candidate) if candidate else []
        if parsed and verify(gold_parsed, parsed, timeout_seconds=_timeout()):
            return True
    return False


def is_hit(extracted: str | None, gold: str | None, options: dict[str, str] | None) -> bool:
    """Multiple choice: the extracted letter equals the gold letter (or the gold is an option's
    text and the letter points at it). Free form: :func:`equivalent`."""
    if extracted is None or gold is None:
        return False
    gold = str(gold).strip()
    if options:
        if gold in options:
            return extracted == gold
        return extracted in options and equivalent(options[extracted], gold)
    return equivalent(extracted, gold)
