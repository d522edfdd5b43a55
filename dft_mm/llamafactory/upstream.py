"""Which LLaMA-Factory the training patch serves: 0.9.5, or another version whose patched code
is unchanged from 0.9.5's, checked rather than assumed.

LLaMA-Factory's git main reports a development version (``0.9.6.dev0``). For any version but
:data:`SUPPORTED_VERSION`, :func:`unsupported` compares the source of every definition the patch
replaces, wraps or relies on (:data:`FINGERPRINTS`: read from the installed files, nothing
imported) with 0.9.5's. Unchanged: the patch applies, with one log line saying it was checked.
Changed: the trainer and the log callback are left alone and the dft_mm keys (and the
``use_*_loss`` flags dft_mm serves) are refused when the YAML is parsed, naming what changed and
the supported version; LLaMA-Factory alone runs as before. LlamaBoard's Loss group has its own
check (:func:`dft_mm.llamafactory.llamaboard.layout_problem`).

Example::

    >>> fingerprint("llamafactory.train.sft.trainer", "CustomSeq2SeqTrainer") == FINGERPRINTS[
    ...     "llamafactory.train.sft.trainer:CustomSeq2SeqTrainer"]  # LLaMA-Factory 0.9.5 installed
    True
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import logging
from pathlib import Path

SUPPORTED_VERSION = "0.9.5"
# "module:name" -> sha256 (first 16 hex) of the definition's source text in LLaMA-Factory 0.9.5
FINGERPRINTS = {
    "llamafactory.hparams.finetuning_args:FinetuningArguments": "c8da8219c628aeb9",
    "llamafactory.hparams.parser:_TRAIN_ARGS": "71034ec4ec12f79c",
    "llamafactory.hparams.parser:get_train_args": "6649fbb8bc7fba53",
    "llamafactory.train.sft.trainer:CustomSeq2SeqTrainer": "5f21c50865680449",
    "llamafactory.train.sft.workflow:run_sft": "b7dcee499aaa561b",
    "llamafactory.train.callbacks:LogCallback": "24909df8a5e1d73a",
}

logger = logging.getLogger("llamafactory.dft_mm")


def _source_file(module: str) -> Path | None:
    """``module``'s file inside the installed ``llamafactory`` package, found without importing
    it or its parent packages (this runs while LLaMA-Factory's modules are loading)."""
    package = importlib.util.find_spec("llamafactory")
    if package is None or not package.submodule_search_locations:
        return None
    path = Path(list(package.submodule_search_locations)[0]).joinpath(*module.split(".")[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def fingerprint(module: str, name: str) -> str | None:
    """sha256 (16 hex) of the top-level definition or assignment ``name`` in ``module``'s source
    file; None when the module or the name is gone."""
    path = _source_file(module)
    if path is None:
        return None
    source = path.read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        else:
            targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
            names = [target.id for target in targets if isinstance(target, ast.Name)]
        if name in names:
            return hashlib.sha256(ast.get_source_segment(source, node).encode()).hexdigest()[:16]
    return None


def changed() -> list[str]:
    """The entries of :data:`FINGERPRINTS` whose installed source differs from 0.9.5's."""
    return [key for key, expected in FINGERPRINTS.items() if fingerprint(*key.split(":")) != expected]


def installed_version() -> str:
    from importlib.metadata import version

    return version("llamafactory")


@functools.lru_cache(maxsize=None)
def unsupported() -> str | None:
    """None when the patch may apply to the installed LLaMA-Factory, else why not (a sentence)."""
    version = installed_version()
    if version == SUPPORTED_VERSION:
        return None
    different = changed()
    if not different:
        logger.warning(f"dft_mm: LLaMA-Factory {version}: the {len(FINGERPRINTS)} definitions dft_mm patches are "
                       f"unchanged from {SUPPORTED_VERSION}'s (checked): patching.")
        return None
    return (f"dft_mm supports LLaMA-Factory {SUPPORTED_VERSION}; the installed {version} changed "
            f"{', '.join(different)}")
