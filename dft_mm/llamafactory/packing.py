"""Sample boundaries of LLaMA-Factory's packed rows, for per-sample DFT weights.

With ``packing: true`` or ``neat_packing: true`` a row holds several samples. LLaMA-Factory's
packed text datasets restart ``position_ids`` at 0 for every sample; for Qwen2-VL-style
M-RoPE ids (``[3, B, T]``) the collator restarts all rows per sample with ``neat_packing``
only. ``neat_packing`` without FlashAttention-2 also passes a block-diagonal ``[B, 1, T, T]``
attention mask. :func:`segment_ids` turns these into ``[B, T]`` ids (the running count of
sample starts), the form :func:`dft_mm.losses.dft_loss` takes.
"""

from __future__ import annotations

import torch

from dft_mm.errors import UserError

PACKING_KINDS = (None, "packing", "neat")


def packing_of(dataset) -> str | None:
    """How LLaMA-Factory packed ``dataset``: ``"neat"``, ``"packing"`` or None (from the
    columns its packed processor adds; a dataset without column names counts as unpacked)."""
    columns = set(getattr(dataset, "column_names", None) or ())
    if "packing_params" in columns:
        return "neat"
    return "packing" if "position_ids" in columns else None


def _from_position_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` or ``[R, B, T]`` (M-RoPE) ids -> ``[B, T]`` segment ids."""
    starts = position_ids == 0
    if starts.dim() == 3:
        starts = starts.all(dim=0)
    return starts.long().cumsum(dim=-1)


def _from_block_mask(mask: torch.Tensor) -> torch.Tensor:
    """``[B, 1, T, T]`` additive (0 = attend) or boolean (True = attend) mask -> segment ids:
    a position starts a sample when the first key it attends to is itself."""
    attend = mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] == 0
    first = attend.int().argmax(dim=-1)  # [B, T]
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return (first == positions).long().cumsum(dim=-1)


def segment_ids(inputs: dict, packing: str | None) -> torch.Tensor | None:
    """``[B, T]`` sample ids of the batch ``inputs`` of a dataset packed as ``packing``
    (see :func:`packing_of`), or None for one sample per row.

    Raises :class:`~dft_mm.errors.UserError` when the rows are packed but the samples cannot
    be told apart, with the configuration that fixes it.
    """
    if packing not in PACKING_KINDS:
        raise ValueError(f"packing must be one of {PACKING_KINDS}; got {packing!r}.")
    if packing is None:
        return None
    position_ids = inputs.get("position_ids")
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        return _from_block_mask(mask)
    if isinstance(position_ids, torch.Tensor) and (position_ids.dim() == 2 or (position_ids.dim() == 3 and packing == "neat")):
        return _from_position_ids(position_ids)
    raise UserError(
        "dft_level: sentence/geomean weights every sample of a packed row separately, but this packed batch does not "
        "show where its samples start (M-RoPE position ids restart per sample only with neat_packing). Use "
        "neat_packing: true instead of packing: true, turn packing off, or use dft_level: token."
    )
