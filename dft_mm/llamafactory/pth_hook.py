"""The patch's entry point, loaded at interpreter start by ``dft_mm_hook.pth``.

Installs a lazy ``sys.meta_path`` finder: nothing is imported now (no torch, no
LLaMA-Factory); when one of :data:`PATCHED_MODULES` finishes loading in *any* process
(torchrun children included), the matching ``patch_*`` function below applies the patch:

* ``llamafactory.hparams.parser``: :class:`~dft_mm.llamafactory.arguments.DftFinetuningArguments`
  replaces ``FinetuningArguments`` in the parser's argument lists (the YAML keys);
* ``llamafactory.train.sft.trainer``: ``CustomSeq2SeqTrainer`` becomes the subclass of
  :func:`dft_mm.llamafactory.trainer.make_trainer_class` (the loss hook);
* ``dft_mm.llamafactory.arguments``: when *it* loads first, it imports LLaMA-Factory's
  parser while itself half-initialised, so the parser is patched once it is complete;
* ``llamafactory.train.callbacks``: ``trainer_log.jsonl`` also gets ``nll`` and
  ``mean_target_prob`` (:mod:`dft_mm.llamafactory.training_log`);
* ``llamafactory.webui.interface``: LlamaBoard gets its Loss group
  (:mod:`dft_mm.llamafactory.llamaboard`).

On a LLaMA-Factory other than 0.9.5 the patch applies only if the code it patches is unchanged
(checked: :mod:`dft_mm.llamafactory.upstream`); otherwise the trainer and callbacks stay
LLaMA-Factory's and the dft_mm keys are refused when parsed.

This module is the only one that knows the others; they do not import it.
``DFT_MM_DISABLE=1`` turns the hook off. Installing twice is a no-op.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from types import ModuleType

_ARG_LISTS = ("_TRAIN_ARGS", "_INFER_ARGS", "_EVAL_ARGS", "_TRAIN_MCA_ARGS")
_PARSER = "llamafactory.hparams.parser"
_ARGUMENTS = "dft_mm.llamafactory.arguments"


def patch_parser_module(module: ModuleType) -> None:
    """Swap ``FinetuningArguments`` for ``DftFinetuningArguments`` in the parser's lists."""
    arguments = sys.modules.get(_ARGUMENTS)
    if arguments is not None and not hasattr(arguments, "DftFinetuningArguments"):
        return  # arguments.py is mid-import (it loaded LLaMA-Factory): patched when it completes
    from llamafactory.hparams.finetuning_args import FinetuningArguments

    from dft_mm.llamafactory.arguments import DftFinetuningArguments

    for name in _ARG_LISTS:
        arg_list = getattr(module, name, None)
        if isinstance(arg_list, list):
            arg_list[:] = [DftFinetuningArguments if cls is FinetuningArguments else cls for cls in arg_list]


def patch_parser_if_loaded(module: ModuleType) -> None:
    """After ``arguments.py`` loads: patch a parser it loaded while half-initialised."""
    parser = sys.modules.get(_PARSER)
    if parser is not None and getattr(parser, "_TRAIN_ARGS", None) is not None:
        patch_parser_module(parser)


def patch_trainer_module(module: ModuleType) -> None:
    """Replace ``CustomSeq2SeqTrainer`` with the dft_mm subclass (once), unless the installed
    LLaMA-Factory changed the code it patches (:mod:`dft_mm.llamafactory.upstream`)."""
    from dft_mm.llamafactory.upstream import unsupported

    if unsupported():
        return
    from dft_mm.llamafactory.trainer import make_trainer_class

    base = module.CustomSeq2SeqTrainer
    if not getattr(base, "_dft_mm_patched", False):
        patched = make_trainer_class(base)
        patched._dft_mm_patched = True
        module.CustomSeq2SeqTrainer = patched


def patch_callbacks_module(module: ModuleType) -> None:
    from dft_mm.llamafactory.training_log import patch_callbacks_module as patch
    from dft_mm.llamafactory.upstream import unsupported

    if unsupported():
        return

    patch(module)


def patch_webui_module(module: ModuleType) -> None:
    from dft_mm.llamafactory.llamaboard import patch_interface_module

    patch_interface_module(module)


# module name -> the function above applied to it right after it loads
PATCHED_MODULES = {
    _PARSER: patch_parser_module,
    "llamafactory.train.sft.trainer": patch_trainer_module,
    _ARGUMENTS: patch_parser_if_loaded,
    "llamafactory.train.callbacks": patch_callbacks_module,
    "llamafactory.webui.interface": patch_webui_module,
}


class _PatchingLoader(importlib.abc.Loader):
    """Wraps the real loader; runs the patch right after the module executes."""

    def __init__(self, wrapped: importlib.abc.Loader, patch):
        self.wrapped = wrapped
        self.patch = patch

    def create_module(self, spec):
        return self.wrapped.create_module(spec)

    def exec_module(self, module) -> None:
        self.wrapped.exec_module(module)
        self.patch(module)


class DftMmFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; decorates the specs of :data:`PATCHED_MODULES`."""

    def find_spec(self, fullname, path, target=None):
        patch = PATCHED_MODULES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, DftMmFinder):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def installed() -> bool:
    """Whether the finder is on ``sys.meta_path`` (the patch is active in this process)."""
    return any(isinstance(finder, DftMmFinder) for finder in sys.meta_path)


def install(force: bool = False) -> None:
    """Put the finder first on ``sys.meta_path`` unless already there or disabled
    (``DFT_MM_DISABLE=1``, ignored when ``force``)."""
    if os.environ.get("DFT_MM_DISABLE") == "1" and not force:
        return
    if not installed():
        sys.meta_path.insert(0, DftMmFinder())


def apply_all() -> None:
    """Install the hook (even if ``DFT_MM_DISABLE=1``) and patch the modules already loaded."""
    install(force=True)
    for name, patch in PATCHED_MODULES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)


install()
