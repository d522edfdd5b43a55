"""The fused head for ASFT, EAFT, the weight floor and the new statistics, against
:func:`dft_mm.losses.sft_loss_and_stats` on materialised logits (values, gradients, every
statistic), for both backends where they serve the objective (Triton in its CPU interpreter)."""

from __future__ import annotations

import pytest
import torch

from dft_mm.fused import LogitTransform, linear_sft_and_stats
from dft_mm.fused.reference import ReferenceHead
from dft_mm.loss_spec import LossSpec
from dft_mm.losses import sft_loss_and_stats
from test_fused_head import B, H, T, V, _rel, backend, grads_of, make_batch  # noqa: F401  (backend: a fixture)

H_REF = 6  # the reference's hidden size may differ from the policy's

SPECS = {
    "nll": LossSpec.nll(),
    "dft-floor-token": LossSpec.dft("token", 1.0, 0.3),
    "dft-floor-sentence": LossSpec.dft("sentence", 1.0, 0.05),
    "dft-floor-geomean": LossSpec.dft("geomean", 0.5, 0.4),
    "asft": LossSpec.asft(0.5),
    "eaft": LossSpec.eaft(1.0),
    "eaft-alpha2": LossSpec.eaft(2.0),
}
TORCH_ONLY = ("asft", "eaft")


def make_reference(seed=30, bias=False, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H_REF, generator=gen).to(dtype)
    weight = (torch.randn(V, H_REF, generator=gen) * 0.7).to(dtype)
    b = (torch.randn(V, generator=gen) * 0.5).to(dtype) if bias else None
    return ReferenceHead(hidden, weight, b)


def reference_logits(ref: ReferenceHead, transform=None):
    z = ref.hidden @ ref.weight.T + (0 if ref.bias is None else ref.bias)
    return z if transform is None else transform(z)


def _skip_unserved(backend, spec):  # noqa: F811
    if backend == "triton" and spec.objective in TORCH_ONLY:
        pytest.skip(f"the triton backend does not serve {spec.objective} (test_triton_refuses_asft_and_eaft)")


@pytest.mark.parametrize("name", TORCH_ONLY)
def test_triton_refuses_asft_and_eaft(name):
    spec = SPECS[name]
    hidden, weight, _, labels = make_batch()
    reference = make_reference() if spec.needs_reference else None
    with pytest.raises(ValueError, match=f"triton backend serves nll and dft, not {spec.objective}"):
        linear_sft_and_stats(hidden, weight, labels, spec, reference=reference, backend="triton")


def assert_same_stats(got, want):
    for name in ("nll_sum", "prob_sum", "num_tokens", "entropy_sum", "kl_sum", "zero_weight_seqs", "num_seqs"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_value_gradients_and_stats_equal_the_unfused_objective(backend, name, with_bias):  # noqa: F811
    spec = SPECS[name]
    _skip_unserved(backend, spec)
    hidden, weight, bias, labels = make_batch(seed=31, bias=with_bias)
    reference = make_reference(bias=with_bias) if spec.needs_reference else None
    loss, stats = linear_sft_and_stats(hidden, weight, labels, spec, reference=reference, bias=bias, backend=backend,
                                       chunk_size=5)
    logits = hidden @ weight.T + (0 if bias is None else bias)
    ref_logits = None if reference is None else reference_logits(reference)
    want, want_stats = sft_loss_and_stats(logits, labels, spec, ref_logits=ref_logits)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-7)
    assert_same_stats(stats, want_stats)
    assert stats.entropy_sum > 0 and (stats.kl_sum > 0) == spec.needs_reference
    for got, expected in zip(grads_of(loss, (hidden, weight, bias)), grads_of(want, (hidden, weight, bias))):
        assert expected.abs().max() > 0
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(SPECS))
def test_evaluation_without_gradients_equals_the_unfused_objective(backend, name):  # noqa: F811
    spec = SPECS[name]
    _skip_unserved(backend, spec)
    hidden, weight, _, labels = make_batch(seed=32)
    reference = make_reference() if spec.needs_reference else None
    with torch.no_grad():
        loss, stats = linear_sft_and_stats(hidden, weight, labels, spec, reference=reference, backend=backend, chunk_size=4)
        ref_logits = None if reference is None else reference_logits(reference)
        want, want_stats = sft_loss_and_stats(hidden @ weight.T, labels, spec, ref_logits=ref_logits)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-7)
    assert_same_stats(stats, want_stats)


@pytest.mark.parametrize("chunk_size", [6, 23])  # one softmax block per chunk; 16 + 7 rows (ROW_BLOCK)
def test_asft_kl_is_exactly_zero_against_itself_and_its_gradient_is_dfts(chunk_size):
    """Step 0 of ASFT: the reference is the policy, so the KL and its gradient vanish."""
    hidden, weight, _, labels = make_batch(seed=33)
    itself = ReferenceHead(hidden.detach().clone(), weight.detach().clone())
    loss, stats = linear_sft_and_stats(hidden, weight, labels, LossSpec.asft(1.0), reference=itself,
                                       chunk_size=chunk_size)
    dft, dft_stats = linear_sft_and_stats(hidden, weight, labels, LossSpec.dft(), chunk_size=chunk_size)
    assert stats.kl_sum.item() == 0.0 and loss.item() == pytest.approx(dft.item(), rel=1e-6)
    for got, want in zip(grads_of(loss, (hidden, weight)), grads_of(dft, (hidden, weight))):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_asft_replays_the_logit_transform_on_both_heads():
    hidden, weight, _, labels = make_batch(seed=34)
    cap = LogitTransform.softcap(2.0)
    reference = make_reference(seed=35)
    reference.transform = cap
    loss, stats = linear_sft_and_stats(hidden, weight, labels, LossSpec.asft(0.5), reference=reference,
                                       logit_transform=cap, chunk_size=5)
    want, want_stats = sft_loss_and_stats(cap(hidden @ weight.T), labels, LossSpec.asft(0.5),
                                          ref_logits=reference_logits(reference, cap))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-7)
    assert_same_stats(stats, want_stats)
    for got, expected in zip(grads_of(loss, (hidden, weight)), grads_of(want, (hidden, weight))):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["asft", "eaft", "dft-floor-sentence"])
def test_bf16_matches_the_unfused_objective_in_the_same_precision(name):
    spec = SPECS[name]
    hidden, weight, _, labels = make_batch(seed=36)
    h16, w16 = (t.detach().bfloat16().requires_grad_() for t in (hidden, weight))
    reference = make_reference(dtype=torch.bfloat16) if spec.needs_reference else None
    loss, stats = linear_sft_and_stats(h16, w16, labels, spec, reference=reference, chunk_size=5)
    ref_logits = None if reference is None else reference_logits(reference)
    want, want_stats = sft_loss_and_stats(h16 @ w16.T, labels, spec, ref_logits=ref_logits)
    torch.testing.assert_close(loss, want, rtol=1e-6, atol=1e-8)
    assert_same_stats(stats, want_stats)
    for got, expected in zip(grads_of(loss, (h16, w16)), grads_of(want, (h16, w16))):
        assert got.dtype == torch.bfloat16 and _rel(got, expected) < 4 * torch.finfo(torch.bfloat16).eps


def test_a_reference_that_does_not_line_up_is_refused():
    hidden, weight, _, labels = make_batch(seed=37)
    other_vocab = ReferenceHead(torch.randn(B, T, H_REF), torch.randn(V + 1, H_REF))
    with pytest.raises(ValueError, match="policy's vocabulary"):
        linear_sft_and_stats(hidden, weight, labels, LossSpec.asft(), reference=other_vocab)
    other_batch = ReferenceHead(torch.randn(B, T - 1, H_REF), torch.randn(V, H_REF))
    with pytest.raises(ValueError, match="must see the same tokens"):
        linear_sft_and_stats(hidden, weight, labels, LossSpec.asft(), reference=other_batch)
    with pytest.raises(ValueError, match="asft needs reference"):
        linear_sft_and_stats(hidden, weight, labels, LossSpec.asft())
    with pytest.raises(ValueError, match="dft takes no reference"):
        linear_sft_and_stats(hidden, weight, labels, LossSpec.dft(), reference=other_batch)
