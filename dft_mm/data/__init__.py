"""Dataset converters for the DFT paper's setups (``dft-mm data ...``).

- :func:`dft_mm.data.ultrafeedback.convert_ultrafeedback`: UltraFeedback -> best-response alpaca JSONL.
- :func:`dft_mm.data.wethink.convert_wethink`: WeThink -> multimodal sharegpt JSONL.

Both write ``<out>/dataset_info.json`` and ``<out>/stats.json`` beside the data; see docs/data.md.
"""
