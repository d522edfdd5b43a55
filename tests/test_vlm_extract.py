"""Rule-based answer extraction and answer comparison on tricky model responses."""

from __future__ import annotations

import pytest

from dft_mm.evaluation.vlm.compare import equivalent, is_hit
from dft_mm.evaluation.vlm.extract import extract_answer, last_boxed, to_option_letter

OPTIONS = {"A": "3", "B": "4", "C": "2\\sqrt{3}", "D": "\\frac{1}{2}"}


@pytest.mark.parametrize(
    ("response", "answer", "method"),
    [
        ("So the area is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", "boxed"),
        ("Nested: \\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}", "boxed"),
        ("first \\boxed{1} then \\boxed{2}", "2", "boxed"),
        ("<think>count them</think><answer>22.3</answer>", "22.3", "tag"),
        ("<answer>The result is \\boxed{7}</answer>", "7", "tag"),
        ("The final answer is: $f(x) = -x^2 - 2x + 1$", "f(x) = -x^2 - 2x + 1", "phrase"),
        ("**Answer:** 12", "12", "phrase"),
        ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}", "phrase"),
        ("Thus d is approximately 22.30 meters.", "22.30", "last_expression"),
        ("We get $x=5$ and so the slope is $\\frac{1}{2}$ overall", "\\frac{1}{2}", "last_expression"),
        ("red", "red", "whole"),
        ("", None, "empty"),
        ("I am not able to see enough of the figure to decide what is going on here.", None, "none"),
    ],
)
def test_free_form_extraction(response, answer, method):
    extraction = extract_answer(response)
    assert (extraction.answer, extraction.method) == (answer, method)


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("The answer is (B).", "B"),
        ("Answer: B", "B"),
        ("B", "B"),
        ("Answer: \\boxed{C}", "C"),
        ("The correct option is C. 2\\sqrt{3}", "C"),
        ("So BC has length $2\\sqrt{3}$.", "C"),  # option text, no letter
        ("the answer is 4", "B"),  # option text after an answer phrase
        ("The answer is \\boxed{0.5}", "D"),  # mathematically equal to option D's text
        ("I think A or B.", None),  # several options: ambiguous
        ("The answer is A and C.", None),
        ("Looking at the Figure there is no way to tell.", None),  # capital letters inside words do not count
        ("A value of \\frac{1}{2}", None),  # article "A" vs quoted option D's text: they disagree
    ],
)
def test_multiple_choice_extraction(response, letter):
    assert extract_answer(response, OPTIONS).answer == letter


def test_last_boxed_handles_unbalanced_and_missing():
    assert last_boxed("no box here") is None
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("\\fbox{9}") == "9"


def test_option_letter_mapping():
    assert to_option_letter("(D)", OPTIONS) == "D"
    assert to_option_letter("E", OPTIONS) is None  # not an option of this question
    assert to_option_letter("2\\sqrt{3}", OPTIONS) == "C"


@pytest.mark.parametrize(
    ("prediction", "gold", "same"),
    [
        ("0.5", "\\frac{1}{2}", True),
        ("22.30", "22.3", True),
        ("(-2, 1]", "(-2,1]", True),
        ("(-2, 1)", "(-2,1]", False),
        ("60^\\circ", "60", True),
        ("\\sqrt{12}", "2\\sqrt{3}", True),
        ("f(x) = -x^2 - 2x + 1", "f(x)=-x^2-2x+1", True),
        ("12 cm^2", "12", True),  # plain-text unit dropped
        ("5 square units", "5", True),
        ("50%", "50", True),
        ("2x", "2", False),  # a variable is not a unit
        ("Red", "red", True),
        ("blue", "red", False),
        ("3", "4", False),
    ],
)
def test_equivalent(prediction, gold, same):
    assert equivalent(prediction, gold) is same


def test_is_hit_multiple_choice_and_free_form():
    assert is_hit("B", "B", OPTIONS)
    assert not is_hit("A", "B", OPTIONS)
    assert is_hit("C", "2\\sqrt{3}", OPTIONS)  # gold given as option text
    assert not is_hit(None, "B", OPTIONS)
    assert is_hit("0.5", "\\frac{1}{2}", None)


def test_equivalent_works_off_the_main_thread():
    """math-verify's signal-based timeout only works in the main thread; we must not crash elsewhere."""
    import threading

    results = []
    worker = threading.Thread(target=lambda: results.append(equivalent("0.5", "\\frac{1}{2}")))
    worker.start()
    worker.join()
    assert results == [True]
