"""Offline tiny models: a random Qwen2 (text) and Qwen2.5-VL (vision-language) with a BPE
tokenizer trained on the spot, Qwen's special tokens and a Qwen-style chat template.

They load with ``AutoModelForCausalLM`` / ``AutoModelForImageTextToText`` /
``AutoProcessor`` and with LLaMA-Factory templates ``qwen`` and ``qwen2_vl``; nothing is
downloaded. Used by the tests and the demo.

Example::

    dft-mm tiny --kind text --out /tmp/tiny-qwen2
    dft-mm tiny --kind vl --out /tmp/tiny-qwen2_5vl
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Written for this project: ChatML turns as Qwen models use them, images and videos
# expanded to their vision placeholders, a default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'video' or 'video' in part %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tokenizer_corpus() -> list[str]:
    """A small deterministic corpus covering prose, digits, maths and code."""
    words = (
        "the a an of to and in is that for it on with as was be by this are or from at which "
        "answer question image think reason step first then so therefore because total count "
        "red green blue yellow circle square triangle colour color how many shapes are there "
        "def return if else elif for while in range len print import class self none true false "
        "int str list dict float string function value result sum product reverse upper lower "
        "public static void main system out println std vector include namespace using auto "
        "echo local fi then done let const var console log assert equal"
    ).split()
    lines = []
    for i, word in enumerate(words):
        lines.append(f"{word} {words[(i * 7) % len(words)]} {words[(i * 13) % len(words)]} {i} {i * i}")
    lines += [f"{a} + {b} = {a + b}; {a} * {b} = {a * b}" for a in range(30) for b in range(0, 30, 7)]
    lines += [
        "def add(a: int, b: int) -> int:\n    return a + b\n",
        "    if x > 0:\n        return [y for y in xs if y % 2 == 0]\n",
        "<think>count the shapes</think><answer>3</answer>",
        "\\boxed{\\frac{1}{2}} (A) (B) (C) (D) ( ) [ ] { } < > = != == <= >= ; : , . ! ? ' \" # $ % & * / \\ |",
    ]
    return lines


def _transformers_4() -> bool:
    """Whether the installed transformers is 4.x (the floor pyproject.toml admits)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) < 5


def build_tokenizer(out_dir: str | Path, vocab_size: int = 1024):
    """Train a byte-level BPE tokenizer with Qwen's special tokens and save it to ``out_dir``.

    Returns the loaded fast tokenizer; ``pad`` is ``<|endoftext|>``, ``eos`` is ``<|im_end|>``
    as in Qwen instruct models. Its class is ``PreTrainedTokenizerFast``, except on transformers
    4.x, where ``Qwen2TokenizerFast`` (the same tokenizer object): 4.x's Qwen2.5-VL processor
    accepts nothing else.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2TokenizerFast

    fast_class = Qwen2TokenizerFast if _transformers_4() else PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    fast = fast_class(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=4096,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def _text_kwargs(tokenizer, hidden_size: int, num_layers: int, vocab_size: int | None = None) -> dict:
    heads = max(2, hidden_size // 16)
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens.")
    return dict(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )


TEXT_FAMILIES = ("qwen2", "gemma2", "qwen2_moe")


def _text_model(family: str, tokenizer, hidden_size: int, num_layers: int, tie_word_embeddings: bool,
                vocab_size: int | None = None):
    """A random causal LM of ``family``: Qwen2; Gemma2 with soft-capped logits
    (``final_logit_softcapping=2.0``); or Qwen2-MoE (4 experts, top-2, a shared expert)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM

    kwargs = dict(**_text_kwargs(tokenizer, hidden_size, num_layers, vocab_size), tie_word_embeddings=tie_word_embeddings)
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**kwargs))
    if family == "gemma2":
        config = Gemma2Config(**kwargs, head_dim=16, final_logit_softcapping=2.0, query_pre_attn_scalar=16, sliding_window=64)
        return Gemma2ForCausalLM(config)
    if family == "qwen2_moe":
        config = Qwen2MoeConfig(
            **kwargs, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden_size,
            shared_expert_intermediate_size=hidden_size, decoder_sparse_step=1,
        )
        return Qwen2MoeForCausalLM(config)
    raise ValueError(f"family must be one of {', '.join(TEXT_FAMILIES)}; got {family!r}.")


def build_tiny_text(
    out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, tie_word_embeddings: bool = False, seed: int = 0,
    family: str = "qwen2", vocab_size: int | None = None,
) -> Path:
    """Save a random causal LM (``family``, see :data:`TEXT_FAMILIES`; fp32, ~0.2M params) and
    its tokenizer to ``out_dir``. ``vocab_size``: the model's output size (default: the
    tokenizer's ~1k tokens; e.g. 151936 for Qwen's, with the extra rows never targeted)."""
    import torch
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out)
    torch.manual_seed(seed)
    model = _text_model(family, tokenizer, hidden_size, num_layers, tie_word_embeddings, vocab_size)
    config = model.config
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, do_sample=False
    )
    model.save_pretrained(str(out))
    return out


def build_tiny_vl(out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    """Save a random ``Qwen2_5_VLForConditionalGeneration`` with tokenizer and processor.

    Vision tower: 2 blocks, width 32, patch 14, merge 2, projecting to the text width; the
    text model's mrope sections sum to ``head_dim / 2``. Image pixel bounds are small so a
    56x56 image costs 4 visual tokens.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out)
    text = _text_kwargs(tokenizer, hidden_size, num_layers)
    head_dim = hidden_size // text["num_attention_heads"]
    quarter = head_dim // 2 // 4
    mrope_section = [head_dim // 2 - 2 * quarter * 1, quarter, quarter]
    ids = tokenizer.convert_tokens_to_ids
    # transformers 5 reads rope_parameters; 4.x reads the same mrope sections from rope_scaling
    rope = ({"rope_scaling": {"type": "mrope", "mrope_section": mrope_section}} if _transformers_4()
            else {"rope_parameters": {"rope_type": "default", "mrope_section": mrope_section}})
    config = Qwen2_5_VLConfig(
        text_config=dict(text, **rope),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=hidden_size,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=text["eos_token_id"], pad_token_id=text["pad_token_id"], do_sample=False
    )
    model.save_pretrained(str(out))
    pixels = {"min_pixels": 28 * 28, "max_pixels": 112 * 112}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(out))
    return out
