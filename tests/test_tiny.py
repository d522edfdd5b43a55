"""Tiny offline models: loadable with HF auto classes; chat template agrees with LLaMA-Factory."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

from dft_mm.demo.tiny import SPECIAL_TOKENS


def test_text_model_loads_with_special_tokens(tiny_text_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_text_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_text_model)
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert len(set(ids)) == len(SPECIAL_TOKENS) and tokenizer.unk_token_id not in ids
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.decode(tokenizer("def f(x):\n    return x ** 2  # ünïcode")["input_ids"]) == "def f(x):\n    return x ** 2  # ünïcode"


@pytest.mark.parametrize("template", ["qwen2_vl"])
def test_chat_template_matches_llamafactory(tiny_vl_model, template):
    """Generation prompts (chat template) and LLaMA-Factory's training prompts are the same ids."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    processor = AutoProcessor.from_pretrained(tiny_vl_model)
    messages = [{"role": "user", "content": "What colour is it?"}, {"role": "assistant", "content": "red"}]
    rendered = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "What colour is it?"}]}], add_generation_prompt=True, tokenize=False
    )
    lf_tokenizer = AutoTokenizer.from_pretrained(tiny_vl_model)
    lf_template = get_template_and_fix_tokenizer(lf_tokenizer, DataArguments(template=template))
    prompt_ids, response_ids = lf_template.encode_oneturn(lf_tokenizer, messages)
    assert processor.tokenizer(rendered, add_special_tokens=False)["input_ids"] == prompt_ids
    assert lf_tokenizer.decode(response_ids) == "red<|im_end|>\n"
