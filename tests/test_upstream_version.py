"""Other LLaMA-Factory versions (git main reports 0.9.6.dev0): the patch applies only where the
code it patches is unchanged from 0.9.5's, checked; otherwise the dft_mm keys are refused with
the supported version named, and LLaMA-Factory's trainer is left alone (no half-patch)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from dft_mm.llamafactory import upstream

TRAINER = "llamafactory.train.sft.trainer:CustomSeq2SeqTrainer"


@pytest.fixture
def version(monkeypatch):
    def pretend(text: str, changed: tuple[str, ...] = ()):
        monkeypatch.setattr(upstream, "installed_version", lambda: text)
        for key in changed:
            monkeypatch.setitem(upstream.FINGERPRINTS, key, "0" * 16)
        upstream.unsupported.cache_clear()

    yield pretend
    upstream.unsupported.cache_clear()


def test_the_fingerprints_are_the_installed_0_9_5():
    assert upstream.installed_version() == upstream.SUPPORTED_VERSION == "0.9.5"
    assert upstream.changed() == []
    assert upstream.fingerprint("llamafactory.train.sft.trainer", "no_such_name") is None
    assert upstream.fingerprint("llamafactory.no_such_module", "x") is None


def test_a_dev_version_with_unchanged_code_is_patched_and_says_so(version, caplog):
    version("0.9.6.dev0")
    with caplog.at_level(logging.WARNING, logger="llamafactory.dft_mm"):
        assert upstream.unsupported() is None
    assert "LLaMA-Factory 0.9.6.dev0: the 6 definitions dft_mm patches are unchanged from 0.9.5's (checked)" in caplog.text


def test_a_dev_version_with_changed_code_is_refused_naming_what_changed(version):
    version("0.9.6.dev0", changed=(TRAINER,))
    assert upstream.unsupported() == (
        f"dft_mm supports LLaMA-Factory 0.9.5; the installed 0.9.6.dev0 changed {TRAINER}")


SCRIPT = """
import sys
from dft_mm.llamafactory import upstream
upstream.installed_version = lambda: "0.9.6.dev0"
if sys.argv[1] == "changed":
    upstream.FINGERPRINTS["{trainer}"] = "0" * 16
from llamafactory.hparams import get_train_args
import llamafactory.train.sft.trainer as trainer
args = dict(model_name_or_path=sys.argv[2], stage="sft", do_train=True, finetuning_type="full", dataset="unused",
            template="qwen", output_dir=sys.argv[3], overwrite_output_dir=True, report_to="none")
print("patched:", getattr(trainer.CustomSeq2SeqTrainer, "_dft_mm_patched", False))
print("plain:", get_train_args(args)[3].dft_mm_active)
try:
    print("dft:", get_train_args(dict(args, sft_loss="dft"))[3].sft_loss)
except ValueError as err:
    print("refused:", err)
""".replace("{trainer}", TRAINER)


@pytest.mark.parametrize("code", ["unchanged", "changed"])
def test_the_real_parser_and_trainer_on_a_dev_version(code, tiny_text_model, tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, code, str(tiny_text_model), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    if code == "unchanged":
        assert "patched: True" in done.stdout and "plain: False" in done.stdout and "dft: dft" in done.stdout
    else:  # nothing patched, plain LLaMA-Factory runs, the keys are refused with the fix
        assert "patched: False" in done.stdout and "plain: False" in done.stdout
        assert (f"refused: dft_mm supports LLaMA-Factory 0.9.5; the installed 0.9.6.dev0 changed {TRAINER}: "
                "dft_mm refuses sft_loss rather than patch part of it. Install llamafactory==0.9.5") in done.stdout
