"""Fused linear + DFT head: the DFT loss of ``hidden @ weight.T`` without ``[B, T, V]`` logits.

See :func:`linear_dft` and docs/fused.md. Backends: chunked PyTorch (any device; the
default) and Triton (CUDA, opt-in). ``dft-mm bench head`` compares them with the unfused head.
The API is loaded on first use, so ``dft-mm --help`` does not import torch.
"""

__all__ = ["linear_dft", "linear_dft_and_stats", "linear_sft_and_stats", "LogitTransform", "ReferenceHead"]


def __getattr__(name: str):
    if name == "LogitTransform":
        from dft_mm.fused.transforms import LogitTransform

        return LogitTransform
    if name == "ReferenceHead":
        from dft_mm.fused.reference import ReferenceHead

        return ReferenceHead
    if name in __all__:
        from dft_mm.fused import api

        return getattr(api, name)
    raise AttributeError(f"module 'dft_mm.fused' has no attribute {name!r}")
