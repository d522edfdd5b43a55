"""The patch's fused lm_head glue on real (tiny) HF models: discovery and loss equality."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

from dft_mm.llamafactory.fused_head import FusedLMHead
from dft_mm.llamafactory.head_support import find_lm_head
from dft_mm.losses import dft_loss_and_stats
from dft_mm.tiny import build_tiny_text


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
    fused = FusedLMHead(head, level="token", alpha=1.0)
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
    fused = FusedLMHead(model.get_output_embeddings(), level="token", alpha=1.0)
    with pytest.raises(RuntimeError, match="sliced its hidden states"), fused.armed(labels, None):
        model(input_ids=input_ids, logits_to_keep=1)
