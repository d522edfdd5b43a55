"""Run names, spread over seeds and the comparison rule the demo fixed before measuring."""

from __future__ import annotations

import doctest

import pytest

from dft_mm import synthetic
from dft_mm.analysis import spread
from dft_mm.analysis.spread import RunName, Spread, compare, parse_run_name, verdict


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
    assert verdict("DFT", low, "SFT", Spread((91.0, 95.0))).startswith("SFT wins: 93.00 ± 2.83 (91.00–95.00, n=2) vs DFT")
    assert "the seed ranges overlap (DFT +7.50 points on the mean)" in verdict("DFT", high, "SFT", low)
