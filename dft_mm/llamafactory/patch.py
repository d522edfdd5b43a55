"""Apply the dft_mm patch to LLaMA-Factory modules (idempotent).

The ``.pth`` hook (:mod:`dft_mm.llamafactory.pth_hook`) calls the ``patch_*_module``
functions as the modules load; :func:`apply_all` does the same for an already-running
process (``dft_mm.apply()``).
"""

from __future__ import annotations

import sys
from types import ModuleType

from dft_mm.llamafactory import pth_hook

_ARG_LISTS = ("_TRAIN_ARGS", "_INFER_ARGS", "_EVAL_ARGS", "_TRAIN_MCA_ARGS")


def patch_parser_module(module: ModuleType) -> None:
    """Swap ``FinetuningArguments`` for :class:`DftFinetuningArguments` in the parser's lists."""
    arguments = sys.modules.get("dft_mm.llamafactory.arguments")
    if arguments is not None and not hasattr(arguments, "DftFinetuningArguments"):
        return  # arguments.py is mid-import (it loaded LLaMA-Factory); it patches the parser itself
    from llamafactory.hparams.finetuning_args import FinetuningArguments

    from dft_mm.llamafactory.arguments import DftFinetuningArguments

    for name in _ARG_LISTS:
        arg_list = getattr(module, name, None)
        if isinstance(arg_list, list):
            arg_list[:] = [DftFinetuningArguments if cls is FinetuningArguments else cls for cls in arg_list]


def patch_trainer_module(module: ModuleType) -> None:
    """Replace ``CustomSeq2SeqTrainer`` with the dft_mm subclass (once)."""
    from dft_mm.llamafactory.trainer import make_trainer_class

    base = module.CustomSeq2SeqTrainer
    if not getattr(base, "_dft_mm_patched", False):
        patched = make_trainer_class(base)
        patched._dft_mm_patched = True
        module.CustomSeq2SeqTrainer = patched


def apply_all() -> None:
    """Install the import hook (even if ``DFT_MM_DISABLE=1``) and patch loaded modules."""
    pth_hook.install(force=True)
    for name, patch_name in pth_hook.PATCHED_MODULES.items():
        module = sys.modules.get(name)
        if module is not None:
            globals()[patch_name](module)
