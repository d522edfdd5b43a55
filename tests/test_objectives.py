"""ASFT, EAFT, the weight floor and the new statistics in :mod:`dft_mm.losses`, against
LLaMA-Factory 0.9.5's own loss functions (the peer, imported and run) and direct formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dft_mm.loss_spec import LEVELS, LossSpec
from dft_mm.losses import dft_loss, dft_loss_and_stats, sft_loss, sft_loss_and_stats
from test_losses import make_batch, reference_loss


def upstream():
    """LLaMA-Factory's loss functions (train/trainer_utils.py)."""
    from llamafactory.train import trainer_utils

    return trainer_utils


def _grad(loss, tensor):
    (grad,) = torch.autograd.grad(loss, tensor)
    return grad


def test_asft_equals_llamafactorys_asft_loss_func():
    """Upstream ASFT = mean DFT + asft_alpha * mean KL(ref || policy) over one micro-batch's
    supervised positions: ours without num_items_in_batch is the same loss and gradient."""
    logits, labels = make_batch(seed=11)
    ref_logits = logits + 0.7 * torch.randn_like(logits)
    ours_in = logits.clone().requires_grad_(True)
    peer_in = logits.clone().requires_grad_(True)
    ours, stats = sft_loss_and_stats(ours_in, labels, LossSpec.asft(0.3), ref_logits=ref_logits)
    peer = upstream().asft_loss_func({"logits": peer_in}, labels, ref_logits, asft_alpha=0.3)
    torch.testing.assert_close(ours, peer, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(_grad(ours, ours_in), _grad(peer, peer_in), rtol=1e-5, atol=1e-7)
    # the logged kl is the KL part alone: upstream's ASFT minus its DFT, over asft_alpha
    dft_part = upstream().dft_loss_func({"logits": logits}, labels)
    assert stats.kl == pytest.approx((peer.item() - dft_part.item()) / 0.3, rel=1e-4)


def test_asft_kl_is_exactly_zero_when_the_reference_is_the_policy():
    logits, labels = make_batch(seed=12)
    logits.requires_grad_(True)
    asft, stats = sft_loss_and_stats(logits, labels, LossSpec.asft(1.0), ref_logits=logits.detach().clone())
    assert stats.kl_sum.item() == 0.0
    dft = dft_loss(logits, labels)
    assert asft.item() == dft.item()
    torch.testing.assert_close(_grad(asft, logits), _grad(dft, logits), rtol=1e-6, atol=1e-8)  # p - q: rounding only


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("num_items", [None, 57])
def test_eaft_equals_llamafactorys_eaft_loss_func(alpha, num_items):
    logits, labels = make_batch(seed=13, vocab=40)  # more than EAFT's top 20
    ours_in = logits.clone().requires_grad_(True)
    peer_in = logits.clone().requires_grad_(True)
    ours = sft_loss(ours_in, labels, LossSpec.eaft(alpha), num_items_in_batch=num_items)
    peer = upstream().eaft_loss_func({"logits": peer_in}, labels, num_items, alpha)
    torch.testing.assert_close(ours, peer, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(_grad(ours, ours_in), _grad(peer, peer_in), rtol=1e-5, atol=1e-8)


def test_eaft_with_alpha_zero_is_sft_and_small_vocabularies_use_every_logit():
    logits, labels = make_batch(seed=14, vocab=13)  # fewer than 20 logits: the top-k is the whole row
    torch.testing.assert_close(sft_loss(logits, labels, LossSpec.eaft(0.0)), sft_loss(logits, labels, LossSpec.nll()))
    weight_of = lambda row: (-(torch.softmax(row, -1) * torch.log_softmax(row, -1)).sum() / 3.0)  # noqa: E731
    one = torch.full_like(labels, -100)
    one[0, 3] = labels[0, 3]  # a single supervised token, predicted at position 2
    expected = weight_of(logits[0, 2]) * -torch.log_softmax(logits[0, 2], -1)[labels[0, 3]]
    torch.testing.assert_close(sft_loss(logits, one, LossSpec.eaft(1.0)), expected)


def reference_with_floor(logits, labels, level, alpha, floor):
    """The float64 loop reference of test_losses with every weight raised to at least ``floor``:
    max(w^alpha, floor) as one loop over sequences (min_weight = 0 is reference_loss itself)."""
    logits = logits.double()
    total, count = logits.new_zeros(()), 0
    for b in range(labels.shape[0]):
        terms = [torch.log_softmax(logits[b, t], -1)[int(labels[b, t + 1])]
                 for t in range(labels.shape[1] - 1) if int(labels[b, t + 1]) != -100]
        probs = [math.exp(float(lp)) for lp in terms]
        if level == "token":
            weights = [p**alpha for p in probs]
        elif level == "sentence":
            weights = [math.prod(probs) ** alpha] * len(terms)
        else:
            weights = [math.prod(probs) ** (alpha / max(len(terms), 1))] * len(terms)
        total = total - sum(max(w, floor) * lp for w, lp in zip(weights, terms))
        count += len(terms)
    return total / max(count, 1)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("floor", [0.0, 0.2, 1.0])
def test_weight_floor_at_every_level(level, floor):
    logits, labels = make_batch(seed=15)
    ours_in = logits.clone().requires_grad_(True)
    ref_in = logits.double().clone().requires_grad_(True)
    ours = dft_loss(ours_in, labels, level=level, alpha=1.0, min_weight=floor)
    ref = reference_with_floor(ref_in, labels, level, 1.0, floor)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(_grad(ours, ours_in).double(), _grad(ref, ref_in), rtol=1e-4, atol=1e-7)
    if floor == 0.0:
        torch.testing.assert_close(ref, reference_loss(logits.double(), labels, level, 1.0))
    if floor == 1.0:  # every weight is 1: SFT
        torch.testing.assert_close(ours, dft_loss(logits, labels, alpha=0.0))


def test_entropy_statistic_is_the_mean_predictive_entropy():
    logits, labels = make_batch(seed=16)
    _, stats = dft_loss_and_stats(logits, labels)
    rows = logits[:, :-1][labels[:, 1:] != -100]
    expected = -(torch.softmax(rows, -1) * torch.log_softmax(rows, -1)).sum(-1).mean()
    assert stats.entropy == pytest.approx(expected.item(), rel=1e-6)


def test_sentence_weight_underflow_is_counted_per_sequence():
    """Row 0: 400 uniform tokens over 50,000 (prod p underflows to 0); row 1: 3 tokens (it does not)."""
    logits = torch.zeros(2, 400, 50000)
    labels = torch.randint(0, 50000, (2, 400))
    labels[1, 4:] = -100
    _, stats = dft_loss_and_stats(logits, labels, level="sentence")
    assert (stats.zero_weight_seqs.item(), stats.num_seqs.item()) == (1, 2)
    _, floored = dft_loss_and_stats(logits, labels, level="sentence", min_weight=0.01)
    assert floored.zero_weight_seqs.item() == 1  # the raw weight underflowed; the floor keeps it training
    # packed: row 0 as two samples of 200 tokens each still underflows twice
    segments = torch.zeros(2, 400, dtype=torch.long)
    segments[0, 200:] = 1
    _, packed = dft_loss_and_stats(logits, labels, level="sentence", segment_ids=segments)
    assert (packed.zero_weight_seqs.item(), packed.num_seqs.item()) == (2, 3)
    _, token = dft_loss_and_stats(logits, labels, level="token")
    assert (token.zero_weight_seqs.item(), token.num_seqs.item()) == (0, 0)  # token level: not counted


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: LossSpec.dft(min_weight=1.5), r"dft_min_weight must be a finite number in \[0, 1\]"),
        (lambda: LossSpec.asft(-0.1), "asft_alpha must be a finite number >= 0"),
        (lambda: LossSpec.eaft(float("nan")), "eaft_alpha must be a finite number >= 0"),
        (lambda: LossSpec("asft", level="sentence"), "apply to dft only"),
        (lambda: LossSpec("dft", kl_coef=0.1), "applies to asft only"),
        (lambda: LossSpec("kl"), "objective must be one of nll, dft, asft, eaft"),
    ],
)
def test_bad_specs_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_asft_needs_reference_logits_of_the_same_shape():
    logits, labels = make_batch(seed=17)
    with pytest.raises(ValueError, match="needs ref_logits"):
        sft_loss(logits, labels, LossSpec.asft())
    with pytest.raises(ValueError, match="must have the policy logits' shape"):
        sft_loss(logits, labels, LossSpec.asft(), ref_logits=logits[..., :-1])


def test_nll_spec_is_cross_entropy():
    logits, labels = make_batch(seed=18)
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(sft_loss(logits, labels, LossSpec.nll()), ce, rtol=1e-6, atol=0)
