"""linear_dft against dft_mm.losses.dft_loss on materialised logits: values, gradients and
statistics, for both backends (Triton through its CPU interpreter here, on CUDA when present)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dft_mm.fused import linear_dft, linear_dft_and_stats
from dft_mm.fused.chunking import auto_chunk_size
from dft_mm.losses import NonFiniteLogitsError, dft_loss, dft_loss_and_stats

B, T, H, V = 3, 11, 8, 37
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# Without CUDA, Triton kernels can only run in its interpreter, which must be switched on
# before triton is first imported (its own library functions are decorated at import time).
# Harmless for the rest of the session: compiled Triton cannot run on such a machine anyway.
_TRITON_PRELOADED = "triton" in sys.modules
if not torch.cuda.is_available() and not _TRITON_PRELOADED:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(params=["torch", "triton"])
def backend(request):
    if request.param == "triton":
        pytest.importorskip("triton", reason="triton is not installed")
        if torch.cuda.is_available():
            pytest.skip("CPU-tensor tests of the Triton kernels run in the interpreter; CUDA has its own tests below")
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set; run this file on its own")
    return request.param


def make_batch(seed=0, bias=False, dtype=torch.float32):
    """hidden [B, T, H], weight [V, H], bias [V] | None (leaves) and labels [B, T] with
    prompt-like ignored spans; S = 23 supervised tokens after the shift."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=gen) * 0.7).to(dtype).requires_grad_()
    b = (torch.randn(V, generator=gen) * 0.5).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, V, (B, T), generator=gen)
    labels[0, :4] = -100
    labels[1, :2] = -100
    labels[1, 7] = -100
    labels[2, :3] = -100
    return hidden, weight, b, labels


def grads_of(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("level", ["token", "sentence", "geomean"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_value_gradients_and_stats_equal_dft_loss(backend, level, alpha, with_bias):
    hidden, weight, bias, labels = make_batch(seed=1, bias=with_bias)
    # 23 supervised tokens in chunks of 5: the last chunk holds 3.
    loss, stats = linear_dft_and_stats(
        hidden, weight, labels, level=level, alpha=alpha, bias=bias, backend=backend, chunk_size=5
    )
    logits = hidden @ weight.T + (0 if bias is None else bias)
    ref_loss, ref_stats = dft_loss_and_stats(logits, labels, level=level, alpha=alpha)

    assert ref_stats.num_tokens.item() == 23 == stats.num_tokens.item()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(stats.nll_sum, ref_stats.nll_sum, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats.prob_sum, ref_stats.prob_sum, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads_of(loss, (hidden, weight, bias)), grads_of(ref_loss, (hidden, weight, bias))):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("chunk_size", [1, 7, 23, 1000, None])
def test_chunk_size_does_not_change_the_result(backend, chunk_size):
    hidden, weight, _, labels = make_batch(seed=2)
    ref = linear_dft(hidden, weight, labels, level="geomean", backend="torch", chunk_size=24)
    got = linear_dft(hidden, weight, labels, level="geomean", backend=backend, chunk_size=chunk_size)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-8)
    for g, r in zip(grads_of(got, (hidden, weight)), grads_of(ref, (hidden, weight))):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-8)


def test_num_items_in_batch_sets_the_denominator(backend):
    hidden, weight, _, labels = make_batch(seed=3)
    got = linear_dft(hidden, weight, labels, num_items_in_batch=100, backend=backend, chunk_size=4)
    ref = dft_loss(hidden @ weight.T, labels, num_items_in_batch=100)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(got * 100 / 23, linear_dft(hidden, weight, labels, backend=backend), rtol=1e-5, atol=1e-8)


def test_empty_batch_is_zero_and_stays_in_the_graph(backend):
    hidden, weight, bias, labels = make_batch(seed=4, bias=True)
    labels = torch.full_like(labels, -100)
    labels[:, 0] = 5  # the first label is never a target: nothing before it predicts it
    loss, stats = linear_dft_and_stats(hidden, weight, labels, bias=bias, backend=backend)
    assert loss.item() == 0.0 and stats.num_tokens.item() == 0
    assert loss.requires_grad
    loss.backward()
    for tensor in (hidden, weight, bias):
        assert tensor.grad is not None and tensor.grad.abs().max() == 0


def test_tied_embedding_and_head_share_one_parameter(backend):
    gen = torch.Generator().manual_seed(5)
    embed = torch.nn.Embedding(V, H)
    mixer = torch.nn.Linear(H, H)
    input_ids = torch.randint(0, V, (B, T), generator=gen)
    labels = input_ids.clone()
    labels[:, :3] = -100

    def loss_and_grads(fused: bool):
        embed.zero_grad()
        mixer.zero_grad()
        hidden = torch.tanh(mixer(embed(input_ids)))
        if fused:
            loss = linear_dft(hidden, embed.weight, labels, backend=backend, chunk_size=6)
        else:
            loss = dft_loss(hidden @ embed.weight.T, labels)
        loss.backward()
        return loss.detach(), embed.weight.grad.clone(), mixer.weight.grad.clone()

    fused, plain = loss_and_grads(True), loss_and_grads(False)
    for got, want in zip(fused, plain):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # the tied weight's gradient has both parts: rows of embedded tokens and head rows
    assert fused[1].abs().sum(dim=1).gt(0).sum() > len(set(input_ids.flatten().tolist()))


def _matmuls_in(fn) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.count for event in prof.key_averages() if event.key in ("aten::mm", "aten::addmm", "aten::addmm_"))


def test_evaluation_without_gradients_matches_with_one_gemm_per_chunk(backend):
    hidden, weight, _, labels = make_batch(seed=6)
    with torch.no_grad():
        got = linear_dft(hidden, weight, labels, level="sentence", alpha=0.5, backend=backend, chunk_size=5)
        ref = dft_loss(hidden @ weight.T, labels, level="sentence", alpha=0.5)
        evaluation = _matmuls_in(lambda: linear_dft(hidden, weight, labels, backend=backend, chunk_size=5))
    assert not got.requires_grad
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-8)
    training = _matmuls_in(lambda: linear_dft(hidden, weight, labels, backend=backend, chunk_size=5))
    assert (evaluation, training) == (5, 15)  # 23 tokens in 5 chunks: logits only vs logits + 2 gradient GEMMs


def test_grad_output_scales_the_gradients(backend):
    hidden, weight, _, labels = make_batch(seed=7)
    (g1,) = grads_of(linear_dft(hidden, weight, labels, backend=backend) * 3.0, (hidden,))
    (g2,) = grads_of(dft_loss(hidden @ weight.T, labels) * 3.0, (hidden,))
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-8)


def test_bf16_inputs_track_the_fp32_result(backend):
    hidden, weight, _, labels = make_batch(seed=8)
    h16 = hidden.detach().bfloat16().requires_grad_()
    w16 = weight.detach().bfloat16().requires_grad_()
    got = linear_dft(h16, w16, labels, backend=backend, chunk_size=5)
    ref = linear_dft(h16.float(), w16.float(), labels, backend="torch")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)  # fp32 logits from bf16 operands
    got_grads = grads_of(got, (h16, w16))
    for g, r, like in zip(got_grads, grads_of(ref, (h16, w16)), (h16, w16)):
        assert g.dtype == like.dtype
        assert float((g.float() - r).norm() / r.norm()) < 1e-2


def test_fp32_master_weight_with_bf16_hidden_gets_an_fp32_gradient():
    hidden, weight, _, labels = make_batch(seed=9)
    h16 = hidden.detach().bfloat16().requires_grad_()
    loss = linear_dft(h16, weight, labels)
    loss.backward()
    assert weight.grad.dtype == torch.float32 and weight.grad.abs().max() > 0
    assert h16.grad.dtype == torch.bfloat16


def test_non_finite_hidden_raises():
    hidden, weight, _, labels = make_batch(seed=10)
    with torch.no_grad():
        hidden[1, 4, 0] = float("nan")
    with pytest.raises(NonFiniteLogitsError) as info:
        linear_dft(hidden, weight, labels)
    assert info.value.count == 1


def test_second_backward_is_refused():
    hidden, weight, _, labels = make_batch(seed=11)
    loss = linear_dft(hidden, weight, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"level": "word"}, "level must be one of"),
        ({"alpha": -1.0}, "alpha must be a number >= 0"),
        ({"backend": "cuda"}, "backend must be one of"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    hidden, weight, _, labels = make_batch()
    with pytest.raises(ValueError, match=message):
        linear_dft(hidden, weight, labels, **kwargs)


def test_bad_shapes_are_named():
    hidden, weight, _, labels = make_batch()
    with pytest.raises(ValueError, match="labels"):
        linear_dft(hidden, weight, labels[:, 1:])
    with pytest.raises(ValueError, match=r"weight must be \[V, H=8\]"):
        linear_dft(hidden, weight[:, 1:], labels)
    with pytest.raises(ValueError, match=r"bias must be \[V=37\]"):
        linear_dft(hidden, weight, labels, bias=torch.zeros(5))


def test_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    hidden, weight, _, labels = make_batch()
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        linear_dft(hidden, weight, labels, backend="triton")


def test_auto_chunk_size_fits_the_budget():
    cpu = torch.device("cpu")
    assert auto_chunk_size(0, 32000, 8, cpu) == 1
    assert auto_chunk_size(10, 32000, 8, cpu) == 10
    big = auto_chunk_size(10**7, 152064, 4, cpu)
    assert big % 64 == 0 and 64 <= big * 152064 * 4 <= 160 * 2**20
    assert auto_chunk_size(10**7, 10**9, 8, cpu) == 1  # one row is over budget: still progress


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("level", ["token", "geomean"])
def test_cuda_triton_bf16_matches_fp32_reference(level):
    gen = torch.Generator().manual_seed(12)
    hidden = torch.randn(2, 512, 256, generator=gen).cuda()
    weight = (torch.randn(4099, 256, generator=gen) * 0.12).cuda()
    labels = torch.randint(0, 4099, (2, 512), generator=gen).cuda()
    labels[:, :100] = -100
    h16, w16 = (t.bfloat16().requires_grad_() for t in (hidden, weight))
    loss = linear_dft(h16, w16, labels, level=level, backend="auto", chunk_size=96)
    ref_h, ref_w = hidden.double().requires_grad_(), weight.double().requires_grad_()
    ref = linear_dft(ref_h, ref_w, labels, level=level, backend="torch")
    loss.backward()
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-2 * abs(ref.item()) + 1e-6
    for got, want in ((h16.grad, ref_h.grad), (w16.grad, ref_w.grad)):
        assert float((got.double() - want).norm() / want.norm()) < 1e-2


@pytest.mark.gpu
@needs_cuda
def test_cuda_triton_extra_memory_is_gradients_plus_one_chunk():
    tokens, hidden_size, vocab = 8192, 1024, 32000
    hidden = torch.randn(1, tokens, hidden_size, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = (torch.randn(vocab, hidden_size, device="cuda") * 0.03).bfloat16().requires_grad_()
    labels = torch.randint(0, vocab, (1, tokens), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    linear_dft(hidden, weight, labels).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    gradients = 2 * (weight.numel() + hidden.numel())  # bf16 grad of weight and hidden
    assert extra <= gradients + 160 * 2**20 + 64 * 2**20  # + one chunk (auto cap) + small buffers


def test_triton_kernel_compiles_for_hopper_without_a_gpu():
    """The compiled (not interpreted) kernel builds to an sm_90 cubin with Triton's bundled
    ptxas, for every dtype and variant; the gradient sweep adds its tile barrier."""
    pytest.importorskip("triton", reason="triton is not installed")
    script = os.path.join(os.path.dirname(__file__), "fixtures", "fused", "compile_kernel.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    variants = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(variants) == 12 and all(v["cubin_bytes"] > 0 for v in variants)
    no_grad = {v["grad"]: v["barriers"] for v in variants if not v["write_grad"]}
    assert all(v["barriers"] > no_grad[v["grad"]] for v in variants if v["write_grad"])
