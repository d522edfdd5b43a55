"""Fused linear + DFT head: the DFT loss of ``hidden @ weight.T`` without ``[B, T, V]`` logits.

See :func:`linear_dft` and docs/fused.md. Backends: chunked PyTorch (any device, the
reference) and Triton (CUDA). ``dft-mm bench head`` compares them with the unfused head.
"""

from dft_mm.fused.api import linear_dft, linear_dft_and_stats

__all__ = ["linear_dft", "linear_dft_and_stats"]
