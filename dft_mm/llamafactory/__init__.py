"""The LLaMA-Factory patch: thin glue between :mod:`dft_mm.losses` / :mod:`dft_mm.fused`
and LLaMA-Factory's argument parser and SFT trainer. Importing this package is cheap."""
