"""linear_dft against dft_mm.losses.dft_loss on materialised logits: values, gradients and
statistics, for both backends (Triton through its CPU interpreter; the CUDA runs are in
test_fused_gpu.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dft_mm.fused import LogitTransform, linear_dft, linear_dft_and_stats
from dft_mm.fused.chunking import HOST_CHUNK_BYTES, auto_chunk_size, free_memory_bytes
from dft_mm.losses import NonFiniteLogitsError, dft_loss, dft_loss_and_stats

B, T, H, V = 3, 11, 8, 37


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


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_matches_the_unfused_head_in_the_same_precision(backend, dtype):
    """Logits rounded where nn.Linear rounds them, softmax in fp32: the loss equals the unfused
    loss on low-precision logits, and the gradients agree to a few low-precision ulps."""
    hidden, weight, _, labels = make_batch(seed=8)
    h16, w16 = (t.detach().to(dtype).requires_grad_() for t in (hidden, weight))
    got = linear_dft(h16, w16, labels, backend=backend, chunk_size=5)
    ref = dft_loss(h16 @ w16.T, labels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-8)
    for g, r, like in zip(grads_of(got, (h16, w16)), grads_of(ref, (h16, w16)), (h16, w16)):
        assert g.dtype == like.dtype
        assert _rel(g, r) < 4 * torch.finfo(dtype).eps


def test_fp32_logits_put_bf16_gradients_at_the_rounding_floor(backend):
    """Opt-in: the logits GEMM's fp32 accumulator instead of bf16 logits (nn.Linear's rounding)."""
    gen = torch.Generator().manual_seed(25)
    hidden = torch.randn(2, 40, 64, generator=gen)
    weight = torch.randn(300, 64, generator=gen) * 0.3
    labels = torch.randint(0, 300, (2, 40), generator=gen)
    h16, w16 = (t.bfloat16().requires_grad_() for t in (hidden, weight))
    ref_h, ref_w = (t.double().requires_grad_() for t in (h16.detach(), w16.detach()))
    exact = grads_of(dft_loss(ref_h @ ref_w.T, labels), (ref_h, ref_w))
    rounded = grads_of(linear_dft(h16, w16, labels, backend=backend, chunk_size=16), (h16, w16))
    accurate = grads_of(linear_dft(h16, w16, labels, backend=backend, chunk_size=16, fp32_logits=True), (h16, w16))
    for r, a, e in zip(rounded, accurate, exact):
        floor = _rel(e.bfloat16(), e)
        assert a.dtype == torch.bfloat16 and _rel(a, e) <= 2 * floor < _rel(r, e), (_rel(a, e), floor, _rel(r, e))


def test_autocast_with_an_fp32_master_weight_multiplies_in_bf16_and_returns_fp32_gradients():
    hidden, weight, bias, labels = make_batch(seed=9, bias=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_dft(hidden, weight, labels, bias=bias, chunk_size=4)
        ref = dft_loss(torch.nn.functional.linear(hidden, weight, bias), labels)  # bf16 logits under autocast
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-8)
    fused, plain = grads_of(got, (hidden, weight, bias)), grads_of(ref, (hidden, weight, bias))
    for g, r in zip(fused, plain):
        assert g.dtype == torch.float32
        assert _rel(g, r) < 1e-2  # both are bf16 GEMM results; the fused ones summed in fp32


def test_weight_gradient_accumulates_in_fp32_over_many_chunks():
    """One token per chunk in bf16: the weight gradient is as close to float64 as the unfused
    head's single bf16 GEMM (a bf16 running sum over 256 chunks would drift)."""
    gen = torch.Generator().manual_seed(20)
    hidden = torch.randn(4, 64, 32, generator=gen)
    weight = torch.randn(97, 32, generator=gen) * 0.2
    labels = torch.randint(0, 97, (4, 64), generator=gen)
    h16, w16 = (t.bfloat16().requires_grad_() for t in (hidden, weight))
    (g_w,) = grads_of(linear_dft(h16, w16, labels, chunk_size=1), (w16,))
    ref_h, ref_w = (t.double().requires_grad_() for t in (h16.detach(), w16.detach()))
    (exact,) = grads_of(dft_loss(ref_h @ ref_w.T, labels), (ref_w,))
    (unfused,) = grads_of(dft_loss(h16 @ w16.T, labels), (w16,))
    assert _rel(g_w, exact) <= 1.05 * _rel(unfused, exact)


def test_fp16_with_loss_scaling_neither_underflows_nor_overflows():
    """A loss scaler multiplies the loss by 2**16; with many supervised tokens in the step
    (num_items_in_batch) the unscaled logit gradient is below fp16's range. The fused head's
    fp16 gradients, unscaled, match float64 like the unfused fp16 path's."""
    hidden, weight, _, labels = make_batch(seed=21)
    h16, w16 = (t.detach().half().requires_grad_() for t in (hidden, weight))
    n_items, loss_scale = 200_000, 2.0**16
    fused = grads_of(linear_dft(h16, w16, labels, num_items_in_batch=n_items, chunk_size=5) * loss_scale, (h16, w16))
    plain = grads_of(dft_loss(h16 @ w16.T, labels, num_items_in_batch=n_items) * loss_scale, (h16, w16))
    ref_h, ref_w = (t.double().requires_grad_() for t in (h16.detach(), w16.detach()))
    exact = grads_of(dft_loss(ref_h @ ref_w.T, labels, num_items_in_batch=n_items) * loss_scale, (ref_h, ref_w))
    for g, p_, e in zip(fused, plain, exact):
        assert g.dtype == torch.float16 and torch.isfinite(g).all() and g.abs().max() > 0
        assert _rel(g, e) <= max(2 * _rel(p_, e), 2e-3)


def test_segment_ids_weight_each_packed_sample_like_its_own_row(backend):
    """Two samples packed into one row give the same loss and gradients as the two rows."""
    gen = torch.Generator().manual_seed(22)
    hidden = torch.randn(2, 6, H, generator=gen) * torch.tensor([1.0, 4.0])[:, None, None]  # unlike samples
    weight = torch.randn(V, H, generator=gen) * 0.7
    labels = torch.randint(0, V, (2, 6), generator=gen)
    labels[:, :2] = -100  # each sample: 2 prompt tokens, 4 answer tokens
    packed_h = hidden.reshape(1, 12, H).clone().requires_grad_()
    rows_h = hidden.clone().requires_grad_()
    segments = torch.tensor([[1] * 6 + [2] * 6])
    for level in ("sentence", "geomean"):
        packed = linear_dft(packed_h, weight, labels.reshape(1, 12), level=level, segment_ids=segments, backend=backend)
        rows = linear_dft(rows_h, weight, labels, level=level, backend="torch")
        unfused = dft_loss(packed_h @ weight.T, labels.reshape(1, 12), level=level, segment_ids=segments)
        torch.testing.assert_close(packed, rows, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(unfused, rows, rtol=1e-6, atol=1e-8)
        (g_packed,), (g_rows,) = grads_of(packed, (packed_h,)), grads_of(rows, (rows_h,))
        torch.testing.assert_close(g_packed.reshape(2, 6, H), g_rows, rtol=1e-5, atol=1e-8)
        one_sequence = linear_dft(packed_h, weight, labels.reshape(1, 12), level=level, backend=backend)
        assert abs(float(one_sequence - packed)) > 0.2 * float(packed)  # without ids the row is one sequence


@pytest.mark.parametrize(
    "transform",
    [LogitTransform.softcap(2.0), LogitTransform.scale(0.0625), LogitTransform.divide(3.0)],
    ids=["softcap", "scale", "divide"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_logit_transforms_are_replayed_exactly(backend, transform, dtype):
    hidden, weight, _, labels = make_batch(seed=23)
    h, w = (t.detach().to(dtype).requires_grad_() for t in (hidden, weight))
    got = linear_dft(h, w, labels, level="geomean", logit_transform=transform, backend=backend, chunk_size=5)
    ref = dft_loss(transform(h @ w.T), labels, level="geomean")
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-8)
    plain = linear_dft(h, w, labels, level="geomean", backend=backend)
    assert abs(float(plain - ref)) > 1e-3  # the transform matters here
    for g, r in zip(grads_of(got, (h, w)), grads_of(ref, (h, w))):
        assert _rel(g, r) < (1e-5 if dtype == torch.float32 else 4 * torch.finfo(dtype).eps)


def test_labels_outside_the_vocabulary_are_refused(backend):
    hidden, weight, _, labels = make_batch(seed=24)
    labels[1, 5] = V  # one past the last row of the head
    with pytest.raises(ValueError, match=rf"label id {V} .* outside the model's vocabulary \[0, {V}\)"):
        linear_dft(hidden, weight, labels, backend=backend)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        dft_loss(hidden @ weight.T, labels)
    labels[1, 5] = V - 1  # the last valid id is fine
    linear_dft(hidden, weight, labels, backend=backend).backward()


def test_auto_backend_is_the_chunked_torch_one():
    from dft_mm.fused.api import resolve_backend

    for device in ("cpu", "cuda"):
        assert resolve_backend("auto", torch.device(device), torch.bfloat16).name == "torch"


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
        ({"alpha": -1.0}, "alpha must be a finite number >= 0"),
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
    assert big % 64 == 0 and 64 <= big * 152064 * 4 <= HOST_CHUNK_BYTES
    if free_memory_bytes(cpu) >= 16 * HOST_CHUNK_BYTES:  # the budget is the cap, not free memory
        # the host cap: 128 fp32 rows at Qwen's vocabulary, the same rows with a reference's head beside them
        assert auto_chunk_size(10**7, 152064, 16, cpu, heads=2) == auto_chunk_size(10**7, 152064, 16, cpu) == 128
    assert auto_chunk_size(10**7, 10**9, 8, cpu) == 1  # one row is over budget: still progress


def test_triton_kernel_compiles_for_hopper_without_a_gpu():
    """The compiled (not interpreted) kernel builds to an sm_90 cubin with Triton's bundled
    ptxas, for every logits dtype and variant."""
    pytest.importorskip("triton", reason="triton is not installed")
    script = os.path.join(os.path.dirname(__file__), "fixtures", "fused", "compile_kernel.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    variants = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(variants) == 12 and all(v["cubin_bytes"] > 0 for v in variants)
