"""Histogram math of the token-probability analysis on probabilities known by construction."""

from __future__ import annotations

import math

import pytest
import torch

from dft_mm.analysis.histogram import FINE_BINS, TokenProbHistogram


def _log(values):
    return torch.tensor(values, dtype=torch.float64).log()


def test_counts_shares_means_and_lowest_tokens_match_hand_computation():
    probs = [0.01, 0.05, 0.05, 0.15, 0.35, 0.55, 0.95, 0.97, 1.0, 0.1]
    ids = [11, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    h = TokenProbHistogram(bins=10)
    h.add(_log(probs), torch.tensor(ids))
    s = h.summary()
    # 0.1 belongs to [0.1, 0.2) and 1.0 to the last bin [0.9, 1.0].
    assert s["counts"] == [3, 2, 0, 1, 0, 1, 0, 0, 0, 3]
    assert s["bin_edges"][:2] == [0.0, 0.1] and s["bin_edges"][-1] == 1.0
    assert s["num_tokens"] == 10
    assert s["mean"] == pytest.approx(sum(probs) / 10)
    assert s["mean_log_prob"] == pytest.approx(sum(math.log(p) for p in probs) / 10)
    assert s["share_below_0.1"] == pytest.approx(0.3)
    assert s["share_above_0.9"] == pytest.approx(0.3)
    assert s["lowest_bin_tokens"] == {11: 2, 12: 1}
    assert list(s["lowest_bin_tokens"]) == [11, 12]  # most frequent first


def test_quantiles_are_the_upper_edge_of_the_fine_bin_holding_the_exact_one():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(5000, generator=generator, dtype=torch.float64) ** 3  # skewed to 0, like a base model
    h = TokenProbHistogram(bins=20)
    h.add(probs.log(), torch.zeros(5000, dtype=torch.long))
    s = h.summary()
    for q, value in s["quantiles"].items():
        exact = torch.quantile(probs, float(q), interpolation="lower").item()  # smallest x with F(x) >= q
        assert 0 <= value - exact <= 1 / FINE_BINS, (q, value, exact)
    assert sum(s["counts"]) == 5000 and len(s["counts"]) == 20


def test_streaming_in_batches_equals_one_pass():
    generator = torch.Generator().manual_seed(1)
    probs = torch.rand(1000, generator=generator, dtype=torch.float64).clamp_min(1e-9)
    ids = torch.randint(0, 50, (1000,), generator=generator)
    whole, streamed = TokenProbHistogram(), TokenProbHistogram()
    whole.add(probs.log(), ids)
    for start in range(0, 1000, 97):
        streamed.add(probs[start:start + 97].log(), ids[start:start + 97])
    streamed.add(torch.zeros(0), torch.zeros(0, dtype=torch.long))  # empty batch changes nothing
    a, b = whole.summary(), streamed.summary()
    assert a["counts"] == b["counts"] and a["lowest_bin_tokens"] == b["lowest_bin_tokens"]
    assert a["mean"] == pytest.approx(b["mean"]) and a["quantiles"] == b["quantiles"]


def test_empty_histogram_reports_missing_not_zero():
    s = TokenProbHistogram().summary()
    assert s["num_tokens"] == 0 and s["counts"] == [0] * 10
    assert s["mean"] is None and s["share_below_0.1"] is None and set(s["quantiles"].values()) == {None}


def test_rejects_non_finite_or_mismatched_input():
    h = TokenProbHistogram()
    with pytest.raises(ValueError, match="finite"):
        h.add(torch.tensor([float("nan")]), torch.tensor([1]))
    with pytest.raises(ValueError, match="entries"):
        h.add(torch.tensor([-1.0, -2.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="bins"):
        TokenProbHistogram(bins=3)
