"""Benchmarks, kept apart from the code they measure: ``dft-mm bench head`` (the LM head + DFT
loss alone) and ``dft-mm bench step`` (a whole training step), each method in its own process;
plus the pieces of ``scripts/gpu_check.sh`` (a LLaMA-Factory check, a vLLM smoke, the summary)."""
