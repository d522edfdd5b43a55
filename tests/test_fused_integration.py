"""The patch's fused lm_head glue on real (tiny) HF models: discovery and loss equality."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

from dft_mm.llamafactory.fused_head import FusedLMHead
from dft_mm.llamafactory.head_support import find_lm_head
from dft_mm.loss_spec import LossSpec
from dft_mm.losses import dft_loss_and_stats
from dft_mm.demo.tiny import build_tiny_text


def _batch(vocab: int):
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, vocab, (2, 9), generator=gen)
    labels = input_ids.clone()
    labels[:, :4] = -100
    labels[1, 7:] = -100
    return input_ids, labels


def _assert_fused_equals_logits_path(model, input_ids, labels, **forward_kwargs):
    head, reason = find_lm_head(model)
    assert head is not None, reason
    fused = FusedLMHead(head, LossSpec.dft())
    with fused.armed(labels, num_items_in_batch=11):
        outputs = model(input_ids=input_ids, **forward_kwargs)
    assert outputs.logits.shape[-1] == 0  # no [B, T, V] tensor was built
    result = fused.take()
    assert fused.take() is None  # taken once
    fused.check_output(outputs.logits, result.stub)
    loss, stats = result.loss, result.stats
    (loss + outputs.logits.sum()).backward()  # as the trainer's objective does
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    ref_loss, ref_stats = dft_loss_and_stats(model(input_ids=input_ids, **forward_kwargs).logits, labels, num_items_in_batch=11)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(stats.nll_sum, ref_stats.nll_sum, rtol=1e-5, atol=1e-6)
    assert fused_grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in fused_grads.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad, rtol=1e-4, atol=1e-7, msg=name)
    assert "forward" not in vars(head)  # disarmed: the class forward is back


def test_text_model(tiny_text_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_text_model)
    _assert_fused_equals_logits_path(model, *_batch(model.config.vocab_size))


def test_tied_embeddings(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_text(tmp_path, tie_word_embeddings=True))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    _assert_fused_equals_logits_path(model, *_batch(model.config.vocab_size))


def test_vision_language_model(tiny_vl_model):
    model = AutoModelForImageTextToText.from_pretrained(tiny_vl_model)
    _assert_fused_equals_logits_path(model, *_batch(model.config.text_config.vocab_size))


def test_peft_wrapped_model(tiny_text_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_text_model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    _assert_fused_equals_logits_path(model, *_batch(model.config.vocab_size))


def test_lora_on_lm_head_is_not_fused(tiny_text_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_text_model), LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head"])
    )
    head, reason = find_lm_head(model)
    assert head is None and "not a plain Linear" in reason


def test_sliced_hidden_states_are_refused(tiny_text_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_text_model)
    input_ids, labels = _batch(model.config.vocab_size)
    fused = FusedLMHead(model.get_output_embeddings(), LossSpec.dft())
    with pytest.raises(RuntimeError, match="sliced its hidden states"), fused.armed(labels, None):
        model(input_ids=input_ids, logits_to_keep=1)


class _DoubledLogits(torch.nn.Module):
    """A causal LM whose forward changes the logits after lm_head in a way no known
    transform describes (the fused head must decline it, or refuse it at run time)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def get_output_embeddings(self):
        return self.inner.lm_head

    def forward(self, input_ids):
        hidden = self.inner.model(input_ids=input_ids).last_hidden_state
        logits = self.inner.lm_head(hidden)
        logits = logits * 2.0
        return {"logits": logits}


def test_unknown_logit_maps_are_declined_and_refused_at_run_time(tiny_text_model):
    from dft_mm.llamafactory.head_support import plan_fused_head

    model = _DoubledLogits(AutoModelForCausalLM.from_pretrained(tiny_text_model))
    plan = plan_fused_head(model)
    assert plan.head is None and "changes the logits after lm_head (`logits = logits * 2.0`)" in plan.reason
    input_ids, labels = _batch(model.config.vocab_size)
    fused = FusedLMHead(model.get_output_embeddings(), LossSpec.dft())  # forced on anyway
    with fused.armed(labels, None):
        outputs = model(input_ids)
    with pytest.raises(RuntimeError, match=r"applies \['Mul'\] to its logits after lm_head"):
        fused.check_output(outputs["logits"], fused.take().stub)


def test_known_logit_maps_are_read_from_the_model(tmp_path):
    from dft_mm.llamafactory.head_support import plan_fused_head

    plan = plan_fused_head(AutoModelForCausalLM.from_pretrained(build_tiny_text(tmp_path, family="gemma2")))
    assert plan.head is not None and plan.transform.steps == (("softcap", 2.0),)


def test_fp16_autocast_with_a_grad_scaler_matches_the_unfused_head(tiny_text_model):
    """torch's GradScaler with fp16 autocast and fp32 master weights (fp16 mixed precision):
    given the scaler's scale (as the trainer passes it), the fused head's gradients round as
    the unfused path's and, unscaled, equal them."""
    from dft_mm.llamafactory.metrics import StatsWindow
    from dft_mm.llamafactory.objective import TrainerObjective

    def step(fused: bool):
        model = AutoModelForCausalLM.from_pretrained(tiny_text_model).train()
        input_ids, labels = _batch(model.config.vocab_size)
        head = FusedLMHead(model.get_output_embeddings(), LossSpec.dft()) if fused else None
        objective = TrainerObjective(LossSpec.dft(), StatsWindow(LossSpec.dft()), head, None, lambda: 0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        inputs = {"input_ids": input_ids, "labels": labels}
        with torch.autocast("cpu", dtype=torch.float16), objective.forward(
            inputs, 5000, fused=True, segments=None, loss_scale=scaler.get_scale()
        ):
            loss = objective(model(input_ids=input_ids), labels, 5000)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        return {n: p.grad for n, p in model.named_parameters()}

    fused, plain = step(True), step(False)
    for name, grad in fused.items():
        assert torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad, plain[name], rtol=1e-3, atol=1e-9, msg=name)
    total = lambda grads: torch.stack([g.norm() for g in grads.values()]).norm()  # noqa: E731
    assert float(total(fused)) == pytest.approx(float(total(plain)), rel=1e-5)


def test_segment_ids_from_llamafactory_packed_batches():
    from llamafactory.data.collator import prepare_4d_attention_mask

    from dft_mm.llamafactory.packing import segment_ids

    neat = torch.tensor([[1, 1, 2, 2, 2, 0], [1, 1, 1, 2, 3, 3]])  # LLaMA-Factory's neat_packing indices
    mask = prepare_4d_attention_mask(neat, torch.float32)
    # the padding position (index 0) attends to nothing and stays with the last sample: it has no label
    assert segment_ids({"attention_mask": mask}, "neat").tolist() == [[1, 1, 2, 2, 2, 2], [1, 1, 1, 2, 3, 3]]
    positions = torch.tensor([[0, 1, 0, 1, 2, 0], [0, 1, 2, 0, 0, 1]])  # packing: positions restart per sample
    assert segment_ids({"position_ids": positions}, "packing").tolist() == [[1, 1, 2, 2, 2, 3], [1, 1, 1, 2, 3, 3]]
    assert segment_ids({"position_ids": positions}, None) is None  # unpacked rows: one sequence each
    mrope = torch.zeros(3, 1, 4, dtype=torch.long)  # M-RoPE ids of a packed VL row that never restart...
    mrope[:, :, 1:] = torch.arange(1, 4)
    from dft_mm.errors import UserError

    with pytest.raises(UserError, match="neat_packing: true instead of packing: true"):
        segment_ids({"position_ids": mrope}, "packing")  # ... cannot show its samples without neat_packing
    assert segment_ids({"position_ids": mrope}, "neat").tolist() == [[1, 1, 1, 1]]


def test_the_trainer_reads_the_loss_scale_of_a_real_grad_scaler():
    """What the trainer hook hands the fused head under fp16: accelerate's GradScaler scale (here
    torch's own scaler in the accelerator's place), DeepSpeed's loss scaler's, or None."""
    from types import SimpleNamespace

    from dft_mm.llamafactory.trainer import current_loss_scale

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    trainer = SimpleNamespace(args=SimpleNamespace(fp16=True), accelerator=SimpleNamespace(scaler=scaler))
    assert current_loss_scale(trainer) == 2.0**12
    trainer.args.fp16 = False
    assert current_loss_scale(trainer) is None  # bf16 / fp32: no loss scaling
    deepspeed = SimpleNamespace(optimizer=SimpleNamespace(loss_scale=1024.0))
    assert current_loss_scale(SimpleNamespace(args=SimpleNamespace(fp16=True), accelerator=SimpleNamespace(scaler=None),
                                              deepspeed=deepspeed)) == 1024.0
