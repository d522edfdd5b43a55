"""The fused head on CUDA, both backends (the compiled Triton kernel included), against the
unfused head in the same precision: every level and alpha, fp32/bf16/fp16, bias, tied
weights, all-masked rows, labels at the end of the vocabulary. Skipped without CUDA;
``scripts/gpu_check.sh`` runs it on a GPU machine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dft_mm.fused import LogitTransform, linear_dft, linear_dft_and_stats
from dft_mm.losses import LEVELS, dft_loss, dft_loss_and_stats

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
B, T, H, V = 3, 257, 128, 50_021  # V not a multiple of the kernel's tile; T rows span several chunks


def make(dtype, seed=0, bias=False):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=gen)
    weight = torch.randn(V, H, generator=gen) * (1.5 / H**0.5)
    b = torch.randn(V, generator=gen) * 0.1 if bias else None
    labels = torch.randint(0, V, (B, T), generator=gen)
    labels[:, :40] = -100
    labels[1, -3:] = V - 1  # the last row of the head
    labels[2, :] = -100  # an all-masked row
    labels[2, -1] = 7  # ... whose only label is never a target
    to = dict(device="cuda", dtype=dtype)
    leaves = [hidden.to(**to).requires_grad_(), weight.to(**to).requires_grad_()]
    leaves.append(None if b is None else b.to(**to).requires_grad_())
    return (*leaves, labels.cuda())


def rel(got, want) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))


def grads(loss, tensors):
    tensors = [t for t in tensors if t is not None]
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_fused_equals_unfused_in_the_same_precision(backend, dtype, level, alpha, with_bias):
    hidden, weight, bias, labels = make(DTYPES[dtype], bias=with_bias)
    loss, stats = linear_dft_and_stats(hidden, weight, labels, level=level, alpha=alpha, bias=bias,
                                       backend=backend, chunk_size=96)
    ref, ref_stats = dft_loss_and_stats(F.linear(hidden, weight, bias), labels, level=level, alpha=alpha)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(stats.nll_sum, ref_stats.nll_sum, rtol=1e-5, atol=1e-5)
    tolerance = 1e-5 if dtype == "fp32" else 8 * torch.finfo(DTYPES[dtype]).eps
    for got, want in zip(grads(loss, (hidden, weight, bias)), grads(ref, (hidden, weight, bias))):
        assert torch.isfinite(got).all()
        assert rel(got, want) < tolerance


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_tied_weights_and_a_logit_transform(backend):
    embed = torch.nn.Embedding(V, H, device="cuda", dtype=torch.bfloat16)
    input_ids = torch.randint(0, V, (B, T), device="cuda")
    labels = input_ids.clone()
    labels[:, :30] = -100
    cap = LogitTransform.softcap(5.0)

    def loss_and_grad(fused: bool):
        embed.zero_grad()
        hidden = torch.tanh(embed(input_ids).float()).bfloat16()
        if fused:
            loss = linear_dft(hidden, embed.weight, labels, backend=backend, logit_transform=cap, chunk_size=128)
        else:
            loss = dft_loss(cap(hidden @ embed.weight.T), labels)
        loss.backward()
        return loss.detach(), embed.weight.grad.clone()

    (fused_loss, fused_grad), (ref_loss, ref_grad) = loss_and_grad(True), loss_and_grad(False)
    torch.testing.assert_close(fused_loss, ref_loss, rtol=1e-5, atol=1e-8)
    assert rel(fused_grad, ref_grad) < 8 * torch.finfo(torch.bfloat16).eps


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_labels_outside_the_vocabulary_are_refused_before_any_kernel(backend):
    hidden, weight, _, labels = make(torch.bfloat16)
    labels[0, 50] = V
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        linear_dft(hidden, weight, labels, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_extra_memory_is_the_fp32_gradient_accumulators_plus_one_chunk(backend):
    tokens, hidden_size, vocab = 8192, 1024, 32000
    hidden = torch.randn(1, tokens, hidden_size, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = (torch.randn(vocab, hidden_size, device="cuda") * 0.03).bfloat16().requires_grad_()
    labels = torch.randint(0, vocab, (1, tokens), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    linear_dft(hidden, weight, labels, backend=backend).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    elements = weight.numel() + hidden.numel()
    # fp32 accumulators + their bf16 results (the .grad), one chunk (auto cap), small buffers
    assert extra <= 4 * elements + 2 * elements + 160 * 2**20 + 64 * 2**20
