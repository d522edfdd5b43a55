"""The patch itself: YAML key validation through LLaMA-Factory's parser, the .pth hook."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import dft_mm
from dft_mm.llamafactory.metrics import StatsWindow
from dft_mm.loss_spec import LossSpec
from dft_mm.losses import dft_loss_and_stats


@pytest.fixture(scope="module")
def parse(tiny_text_model, tmp_path_factory):
    """Parse a training dict with LLaMA-Factory's own ``get_train_args`` (patch applied)."""
    dft_mm.apply()
    from llamafactory.hparams import get_train_args

    out = tmp_path_factory.mktemp("parse")

    def _parse(**keys):
        args = {
            "model_name_or_path": str(tiny_text_model), "stage": "sft", "do_train": True, "finetuning_type": "full",
            "dataset": "unused", "template": "qwen", "output_dir": str(out), "overwrite_output_dir": True,
            "report_to": "none", **keys,
        }
        return get_train_args(args)[3]

    return _parse


def test_no_key_leaves_llamafactory_in_charge_and_keys_resolve(parse):
    args = parse()
    assert args.dft_mm_active is False
    assert (args.sft_loss, args.dft_level, args.dft_alpha, args.dft_fused) == (None, None, None, None)
    args = parse(sft_loss="nll")
    assert args.dft_mm_active is True
    assert (args.sft_loss, args.dft_level, args.dft_alpha, args.dft_fused, args.dft_fused_backend) == (
        "nll", "token", 1.0, "auto", "auto")
    args = parse(sft_loss="dft", dft_level="geomean", dft_alpha=0.5, dft_fused=False, dft_fused_backend="triton")
    assert (args.sft_loss, args.dft_level, args.dft_alpha, args.dft_fused, args.dft_fused_backend) == (
        "dft", "geomean", 0.5, "false", "triton")


def test_upstream_use_dft_loss_maps_to_sft_loss_dft(parse):
    args = parse(use_dft_loss=True)
    assert args.sft_loss == "dft" and args.use_dft_loss is False  # upstream's own DFT path stays off
    assert args.dft_upstream_flag == "use_dft_loss"


def test_asft_eaft_and_the_weight_floor_resolve_to_loss_specs(parse):
    from dft_mm.loss_spec import LossSpec

    args = parse(use_asft_loss=True, asft_alpha=0.3)
    # ASFT: use_asft_loss stays on so that LLaMA-Factory builds its reference model; dft_mm serves the loss
    assert (args.sft_loss, args.use_asft_loss, args.dft_upstream_flag) == ("asft", True, "use_asft_loss")
    assert args.loss_spec == LossSpec.asft(0.3)
    args = parse(sft_loss="asft")
    assert args.use_asft_loss is True and args.loss_spec == LossSpec.asft(0.1) and args.dft_upstream_flag is None
    args = parse(use_eaft_loss=True, eaft_alpha=0.5)
    assert (args.sft_loss, args.use_eaft_loss, args.loss_spec) == ("eaft", False, LossSpec.eaft(0.5))
    args = parse(sft_loss="dft", dft_level="sentence", dft_min_weight=0.05)
    assert args.loss_spec == LossSpec.dft("sentence", 1.0, 0.05)
    assert parse(sft_loss="nll").loss_spec == LossSpec.nll()


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"sft_loss": "kl"}, "sft_loss must be one of nll, dft, asft, eaft"),
        ({"sft_loss": "dft", "dft_level": "word"}, "dft_level must be one of token, sentence, geomean"),
        ({"sft_loss": "dft", "dft_alpha": -1}, "dft_alpha must be a finite number >= 0"),
        ({"sft_loss": "dft", "dft_alpha": "high"}, "dft_alpha must be a finite number >= 0"),
        ({"sft_loss": "dft", "dft_fused": "maybe"}, "dft_fused must be one of auto, true, false"),
        ({"sft_loss": "dft", "use_eaft_loss": True}, "sft_loss: dft conflicts with use_eaft_loss: true"),
        ({"sft_loss": "dft", "use_asft_loss": True}, "sft_loss: dft conflicts with use_asft_loss: true"),
        ({"use_dft_loss": True, "sft_loss": "nll"}, "sft_loss: nll conflicts with use_dft_loss: true"),
        ({"use_dft_loss": True, "use_asft_loss": True}, "select different losses .* silently use use_dft_loss"),
        ({"use_asft_loss": True, "use_eaft_loss": True}, "select different losses"),
        ({"dft_level": "sentence"}, "only take effect with an sft_loss"),
        ({"dft_fused": True}, "only take effect with an sft_loss"),
        ({"dft_min_weight": 0.1}, "only take effect with an sft_loss"),
        ({"sft_loss": "nll", "dft_alpha": 0.5}, "only apply with sft_loss: dft"),
        ({"sft_loss": "asft", "dft_min_weight": 0.1}, "dft_min_weight only apply with sft_loss: dft"),
        ({"sft_loss": "eaft", "dft_level": "sentence"}, "dft_level only apply with sft_loss: dft"),
        ({"sft_loss": "dft", "dft_min_weight": 1.5}, r"dft_min_weight must be a finite number in \[0, 1\]"),
        ({"sft_loss": "dft", "dft_min_weight": -0.1}, r"dft_min_weight must be a finite number in \[0, 1\]"),
        ({"sft_loss": "asft", "asft_alpha": -0.1}, "asft_alpha must be a finite number >= 0"),
        ({"use_eaft_loss": True, "eaft_alpha": -1}, "eaft_alpha must be a finite number >= 0"),
        ({"sft_loss": "asft", "dft_fused_backend": "triton"}, "dft_fused_backend: triton serves sft_loss nll and dft"),
        ({"sft_loss": "nll", "use_eaft_loss": True}, "sft_loss: nll conflicts with use_eaft_loss"),
        ({"sft_loss": "dft", "dft_fused_backend": "cuda"}, "dft_fused_backend must be one of auto, torch, triton"),
        ({"sft_loss": "dft", "use_hyper_parallel": True}, "not served with use_hyper_parallel"),
        ({"use_asft_loss": True, "stage": "dpo"}, "sft_loss: asft applies to stage: sft only; got stage: dpo"),
        ({"sft_loss": "eaft", "stage": "pt"}, "applies to stage: sft only"),
    ],
)
def test_bad_values_and_conflicts_are_errors(parse, keys, message):
    with pytest.raises(ValueError, match=message):
        parse(**keys)


def test_megatron_core_path_is_refused(monkeypatch):
    from dft_mm.llamafactory.arguments import DftFinetuningArguments

    monkeypatch.setenv("USE_MCA", "1")  # LLaMA-Factory then trains with mcore_adapter's own trainer
    with pytest.raises(ValueError, match="not served with USE_MCA=1"):
        DftFinetuningArguments(stage="sft", sft_loss="dft")
    assert DftFinetuningArguments(stage="sft").dft_mm_active is False  # no key: nothing to refuse
    monkeypatch.delenv("USE_MCA")
    assert DftFinetuningArguments(stage="sft", sft_loss="dft").sft_loss == "dft"


def _python(code: str, **env) -> str:
    import os

    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # llamafactory may log a warning line first


def test_pth_hook_is_lazy_idempotent_and_can_be_disabled():
    probe = (
        "import sys; from dft_mm.llamafactory import pth_hook; pth_hook.install(); pth_hook.install(); "
        "print('torch' in sys.modules, sum(isinstance(f, pth_hook.DftMmFinder) for f in sys.meta_path))"
    )
    assert _python(probe) == "False 1"  # installed at start-up by the .pth, no torch imported
    assert _python(probe.replace("pth_hook.install(); pth_hook.install(); ", ""), DFT_MM_DISABLE="1") == "False 0"


def test_all_masked_micro_batch_backpropagates_zero_through_a_real_model(tiny_text_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_text_model)
    input_ids = torch.randint(0, 100, (2, 6))
    labels = torch.full_like(input_ids, -100)
    loss, stats = dft_loss_and_stats(model(input_ids=input_ids).logits, labels, num_items_in_batch=17)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in model.parameters() if p.requires_grad)
    window = StatsWindow(LossSpec.dft())
    window.add(stats)
    assert window.flush(torch.device("cpu")) == {}  # nothing supervised: no metric rather than 0/0


@pytest.mark.parametrize(
    "first",
    [
        "",  # LLaMA-Factory imported first: the .pth hook patches its parser as it loads
        # dft_mm first: arguments.py loads the parser while half-initialised; the hook patches
        # the parser once arguments.py has finished loading
        "import dft_mm.llamafactory.arguments; ",
        "import dft_mm.llamafactory.trainer; ",
    ],
)
def test_hook_patches_llamafactory_on_import(first):
    code = first + (
        "from llamafactory.hparams import parser; "
        "print([c.__name__ for c in parser._TRAIN_ARGS if 'Finetuning' in c.__name__])"
    )
    assert _python(code) == "['DftFinetuningArguments']"
    assert _python(code, DFT_MM_DISABLE="1") == "['FinetuningArguments']"
