"""Loaded at interpreter start by ``dft_mm_hook.pth`` (installed into site-packages).

Installs a lazy ``sys.meta_path`` finder: nothing is imported now (no torch, no
LLaMA-Factory); when LLaMA-Factory's argument parser or SFT trainer module finishes
loading in *any* process (torchrun children included), the patch is applied to it.
``DFT_MM_DISABLE=1`` turns the hook off. Installing twice is a no-op.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

# module name -> function in dft_mm.llamafactory.patch applied to the loaded module
PATCHED_MODULES = {
    "llamafactory.hparams.parser": "patch_parser_module",
    "llamafactory.train.sft.trainer": "patch_trainer_module",
}


class _PatchingLoader(importlib.abc.Loader):
    """Wraps the real loader; runs the patch right after the module executes."""

    def __init__(self, wrapped: importlib.abc.Loader, patch_name: str):
        self.wrapped = wrapped
        self.patch_name = patch_name

    def create_module(self, spec):
        return self.wrapped.create_module(spec)

    def exec_module(self, module) -> None:
        self.wrapped.exec_module(module)
        from dft_mm.llamafactory import patch

        getattr(patch, self.patch_name)(module)


class DftMmFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; decorates the specs of :data:`PATCHED_MODULES`."""

    def find_spec(self, fullname, path, target=None):
        patch_name = PATCHED_MODULES.get(fullname)
        if patch_name is None:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, DftMmFinder):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, patch_name)
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


install()
