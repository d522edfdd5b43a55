"""Run names, spread over seeds and the comparison rule the demo fixed before measuring."""

from __future__ import annotations

import doctest

import pytest

from dft_mm.demo import synthetic
from dft_mm.analysis import spread
from dft_mm.analysis.spread import RunName, Spread, compare, parse_run_name, rank


def test_docstring_examples():
    for module in (spread, synthetic):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("name, parsed", [
    ("noisy-code/dft@1", RunName("noisy-code", "dft", "1")),
    ("code/base", RunName("code", "base", None)),
    ("dft@0", RunName("", "dft", "0")),
    ("text-sft", RunName("", "text-sft", None)),
    ("a/b/sft@x", RunName("a/b", "sft", "x")),
])
def test_run_names(name, parsed):
    assert parse_run_name(name) == parsed


def test_spread_uses_the_sample_sd_and_reports_the_range():
    values = Spread((50.0, 50.0, 75.0))
    assert (values.n, round(values.mean, 2), round(values.sd, 2), values.low, values.high) == (3, 58.33, 14.43, 50.0, 75.0)
    assert Spread((70.0,)).sd == 0.0 and Spread((70.0,)).text() == "70.00 (n=1)"


def test_a_win_needs_a_higher_mean_and_no_overlap():
    high, low = Spread((90.0, 92.5, 95.0)), Spread((80.0, 85.0, 90.0))
    assert compare(high, low) == 0  # 90 is in both ranges
    assert compare(Spread((91.0, 92.5, 95.0)), low) == 1 and compare(low, Spread((91.0, 95.0))) == -1


def test_rank_names_a_winner_only_when_it_beats_every_other_method():
    low, high = Spread((80.0, 85.0, 90.0)), Spread((91.0, 95.0))
    clear = rank({"dft": low, "sft": high})
    assert (clear.winner, clear.runner_up, round(clear.margin, 2)) == ("sft", "dft", 8.0)
    assert clear.text() == "sft" and clear.margin_text() == "+8.00 over dft"
    # sft beats dft clearly but not eaft, whose range overlaps: no winner, both named
    tied = rank({"dft": low, "sft": high, "eaft": Spread((88.0, 94.0))})
    assert tied.winner is None and tied.contenders == ("eaft",)
    assert tied.text() == "no clear winner (sft ≈ eaft)" and tied.margin_text() == "+2.00 over eaft"
    alone = rank({"sft": high})
    assert (alone.winner, alone.margin_text()) == ("sft", "—")
