"""The DFT loss family against an independent, loop-based float64 implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dft_mm.losses import LEVELS, NonFiniteLogitsError, dft_loss, dft_loss_and_stats

ALPHAS = (0.0, 0.5, 1.0, 2.0)


def reference_loss(logits: torch.Tensor, labels: torch.Tensor, level: str, alpha: float, n_items=None):
    """Straightforward per-sequence, per-position loop in float64 (weights built from plain products)."""
    logits = logits.double()
    total = logits.new_zeros(())
    count = 0
    for b in range(labels.shape[0]):
        terms = []  # (log p, p) per supervised token of this sequence, in order
        for t in range(labels.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target == -100:
                continue
            log_p = torch.log_softmax(logits[b, t], dim=-1)[target]
            terms.append(log_p)
        if not terms:
            continue
        probs = [float(torch.exp(lp.detach())) for lp in terms]
        if level == "token":
            weights = probs
        elif level == "sentence":
            weights = [math.prod(probs)] * len(terms)
        else:
            weights = [math.prod(probs) ** (1.0 / len(terms))] * len(terms)
        for log_p, w in zip(terms, weights):
            total = total - (w**alpha) * log_p
        count += len(terms)
    return total / (n_items if n_items is not None else max(count, 1))


def make_batch(seed: int = 0, batch: int = 3, length: int = 7, vocab: int = 13):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=gen) * 2
    labels = torch.randint(0, vocab, (batch, length), generator=gen)
    labels[:, 0] = -100
    labels[0, 1:3] = -100  # prompt tokens
    labels[-1, length // 2 + 1 :] = -100  # padding
    return logits, labels


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_value_and_gradient_match_reference(level, alpha):
    logits, labels = make_batch()
    ours_in = logits.clone().requires_grad_(True)
    ref_in = logits.double().clone().requires_grad_(True)
    ours = dft_loss(ours_in, labels, level=level, alpha=alpha)
    ref = reference_loss(ref_in, labels, level, alpha)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours_in.grad.double(), ref_in.grad, rtol=1e-4, atol=1e-6)


def test_alpha_zero_is_cross_entropy():
    logits, labels = make_batch(seed=1)
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    for level in LEVELS:
        torch.testing.assert_close(dft_loss(logits, labels, level=level, alpha=0.0), ce, rtol=1e-6, atol=0)


def test_alpha_zero_gradcheck_float64():
    logits, labels = make_batch(seed=2, batch=2, length=4, vocab=5)
    logits = logits.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: dft_loss(x, labels, alpha=0.0), (logits,))


def test_token_dft_gradient_is_gradient_of_minus_p():
    """The paper's identity: grad of sg(p) * (-log p) equals grad of -p."""
    logits, labels = make_batch(seed=3)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    dft_loss(a, labels, level="token", alpha=1.0).backward()
    shifted = labels[:, 1:]
    mask = shifted != -100
    probs = torch.softmax(b[:, :-1], dim=-1).gather(-1, shifted.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    (-(probs * mask).sum() / mask.sum()).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_num_items_in_batch_is_the_denominator():
    logits, labels = make_batch(seed=4)
    n_local = int((labels[:, 1:] != -100).sum())
    local = dft_loss(logits, labels)
    for n_items in (40, torch.tensor(40)):
        torch.testing.assert_close(dft_loss(logits, labels, num_items_in_batch=n_items), local * n_local / 40)


def test_statistics_are_plain_nll_and_mean_probability():
    logits, labels = make_batch(seed=5)
    _, stats = dft_loss_and_stats(logits, labels, level="token", alpha=1.0)
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="none")
    mask = labels[:, 1:].flatten() != -100
    assert stats.num_tokens.item() == mask.sum().item()
    assert stats.nll == pytest.approx(ce[mask].mean().item(), rel=1e-5)
    assert stats.mean_target_prob == pytest.approx(torch.exp(-ce[mask]).mean().item(), rel=1e-5)


def test_all_masked_batch_is_a_connected_zero():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.full((2, 5), -100)
    for level in LEVELS:
        loss = dft_loss(logits, labels, level=level)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.count_nonzero(logits.grad) == 0


def test_low_precision_logits_are_computed_in_fp32():
    logits, labels = make_batch(seed=6)
    loss = dft_loss(logits.bfloat16(), labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, dft_loss(logits.bfloat16().float(), labels))


def test_non_finite_logits_raise_with_count():
    logits, labels = make_batch(seed=7)
    logits[1, 2, :] = float("nan")  # position 2 predicts labels[1, 3], which is supervised
    with pytest.raises(NonFiniteLogitsError, match=r"1 of \d+ supervised tokens"):
        dft_loss(logits, labels)


@pytest.mark.parametrize("bad", [{"level": "word"}, {"alpha": -0.5}, {"alpha": float("nan")}])
def test_bad_level_or_alpha_is_rejected(bad):
    logits, labels = make_batch()
    with pytest.raises(ValueError, match="level|alpha"):
        dft_loss(logits, labels, **bad)


def test_sentence_weight_underflows_gracefully_for_long_sequences():
    """prod p over many tokens underflows to 0 in fp32: the loss is 0, never NaN."""
    logits = torch.zeros(1, 400, 50000)  # uniform: p = 2e-5, product underflows
    labels = torch.randint(0, 50000, (1, 400))
    assert dft_loss(logits, labels, level="sentence").item() == 0.0
    assert dft_loss(logits, labels, level="geomean").item() == pytest.approx(math.log(50000) / 50000, rel=1e-4)
