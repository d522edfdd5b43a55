"""The LLaMA-Factory patch: thin glue between :mod:`dft_mm.losses` / :mod:`dft_mm.fused` and
LLaMA-Factory. Importing this package is cheap.

One entry module over independent pieces (none of them imports the entry):

* :mod:`.pth_hook` (the entry, loaded by ``dft_mm_hook.pth``): the import hook that patches
  LLaMA-Factory's parser and SFT trainer modules as they load;
* :mod:`.arguments`: the YAML keys and their validation;
* :mod:`.upstream`: which LLaMA-Factory versions the patch serves (0.9.5, or one whose patched
  code is checked unchanged);
* :mod:`.trainer`: the SFT trainer subclass, built from :mod:`.objective` (the loss),
  :mod:`.fused_head` (the fused ``lm_head``), :mod:`.head_support` (can the fused head serve
  this model), :mod:`.packing` (packed-sample boundaries) and :mod:`.metrics` (logged stats);
* :mod:`.commands`: ``dft-mm train``.
"""
