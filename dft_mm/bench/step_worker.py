"""One method of ``dft-mm bench step``, measured in a process of its own.

Run as ``python -m dft_mm.bench.step_worker '<json config>'``; prints one JSON line. A whole
training step of a causal LM with random weights: forward + backward with gradient
checkpointing (no optimizer), one row of ``tokens`` tokens whose first 10 % are prompt
(label -100). Methods:

* ``hf_ce``: the model's own loss (transformers' cross-entropy on fp32-upcast logits): SFT.
* ``lf_dft``: LLaMA-Factory's ``use_dft_loss`` function (``dft_loss_func``) on the logits.
* ``liger_ce``: Liger-Kernel's patched forward with its fused linear cross entropy: SFT.
* ``dft_fused_torch`` / ``dft_fused_triton``: dft_mm's fused head (DFT, token level) through the
  same glue the LLaMA-Factory trainer uses (``FusedLMHead`` + ``TrainerObjective``).

``median_ms`` is the median of ``repeats`` steps after one untimed step; ``peak_gib`` the
allocator's peak during the first step (CPU: peak RSS), ``model_gib`` the memory held before it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass

import torch

from dft_mm.bench.measure import (
    device_name,
    liger_unavailable,
    memory_now,
    memory_peak,
    reset_peak,
    sync,
    timed_repeats,
)

METHODS = ("hf_ce", "lf_dft", "liger_ce", "dft_fused_torch", "dft_fused_triton")
# Qwen2-architecture shapes (random weights); "tiny" is for tests on CPU.
SHAPES = {
    "qwen2.5-coder-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                             num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-coder-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                             num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=False),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class StepConfig:
    method: str
    shape: str = "tiny"
    tokens: int = 256
    dtype: str = "bfloat16"
    device: str = "cpu"
    repeats: int = 3
    seed: int = 0


def unavailable(cfg: StepConfig) -> str | None:
    """Why ``cfg.method`` cannot run here, or None."""
    on_cuda = cfg.device.startswith("cuda")
    if cfg.method == "lf_dft":
        try:
            import llamafactory.train.trainer_utils  # noqa: F401
        except ImportError as err:
            return f"LLaMA-Factory is not importable ({err})"
    if cfg.method == "liger_ce":
        return liger_unavailable(on_cuda)
    if cfg.method == "dft_fused_triton" and not on_cuda:
        return "the Triton backend needs a CUDA device"
    return None


def build_model(cfg: StepConfig):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if cfg.method == "liger_ce":
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2

        apply_liger_kernel_to_qwen2(rope=False, rms_norm=False, swiglu=False, cross_entropy=False,
                                    fused_linear_cross_entropy=True)
    config = Qwen2Config(**SHAPES[cfg.shape], max_position_embeddings=max(cfg.tokens, 4096))
    config._attn_implementation = "sdpa"
    torch.manual_seed(cfg.seed)
    with torch.device(cfg.device):
        model = Qwen2ForCausalLM(config).to(DTYPES[cfg.dtype])
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def make_batch(cfg: StepConfig, vocab: int):
    gen = torch.Generator().manual_seed(cfg.seed)
    input_ids = torch.randint(0, vocab, (1, cfg.tokens), generator=gen)
    labels = input_ids.clone()
    labels[:, : cfg.tokens // 10] = -100
    return input_ids.to(cfg.device), labels.to(cfg.device)


def loss_function(cfg: StepConfig, model):
    """``(input_ids, labels) -> loss`` for ``cfg.method``."""
    if cfg.method in ("hf_ce", "liger_ce"):
        return lambda input_ids, labels: model(input_ids=input_ids, labels=labels).loss
    if cfg.method == "lf_dft":
        from llamafactory.train.trainer_utils import dft_loss_func

        def lf_dft(input_ids, labels):
            return dft_loss_func(model(input_ids=input_ids), labels, num_items_in_batch=None)

        return lf_dft
    from dft_mm.llamafactory.fused_head import FusedLMHead
    from dft_mm.llamafactory.head_support import plan_fused_head
    from dft_mm.llamafactory.metrics import StatsWindow
    from dft_mm.llamafactory.objective import TrainerObjective
    from dft_mm.loss_spec import LossSpec

    backend = cfg.method.removeprefix("dft_fused_")
    head = FusedLMHead(plan_fused_head(model).head, LossSpec.dft(), backend=backend)
    objective = TrainerObjective(LossSpec.dft(), StatsWindow(LossSpec.dft()), head, None, lambda: 0)

    def fused(input_ids, labels):
        with objective.forward({"labels": labels}, None, fused=True, segments=None):
            return objective(model(input_ids=input_ids), labels, None)

    return fused


def measure(cfg: StepConfig) -> dict:
    record = {**asdict(cfg), "device_name": device_name(cfg.device)}
    model = build_model(cfg)
    input_ids, labels = make_batch(cfg, model.config.vocab_size)
    step = loss_function(cfg, model)

    def one_step():
        model.zero_grad(set_to_none=True)
        loss = step(input_ids, labels)
        loss.backward()
        return loss.detach()

    sync(cfg.device)
    record["model_gib"] = round(memory_now(cfg.device) / 2**30, 3)
    reset_peak(cfg.device)
    loss = one_step()
    sync(cfg.device)
    record["peak_gib"] = round(memory_peak(cfg.device) / 2**30, 3)
    last, median_ms = timed_repeats(one_step, cfg.device, cfg.repeats)
    if median_ms is not None:
        loss, record["median_ms"] = last, median_ms
    record["loss"] = float(loss)
    return record


def main(argv: list[str]) -> int:
    cfg = StepConfig(**json.loads(argv[0]))
    print(json.dumps(measure(cfg)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
