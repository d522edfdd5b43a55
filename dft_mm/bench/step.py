"""``dft-mm bench step``: a whole training step (forward + backward, gradient checkpointing) of
a causal LM with random weights, per loss method, each method in its own process
(:mod:`dft_mm.bench.step_worker`): time and peak memory side by side.

Example::

    dft-mm bench step --device cuda --shape qwen2.5-coder-3b --tokens 8192,16384
    dft-mm bench step --device cpu --shape tiny --tokens 256 --methods hf_ce,dft_fused_torch
"""

from __future__ import annotations

from dft_mm.bench.head import resolve_device, run_all
from dft_mm.errors import UserError


def bench_step(
    shape: str = "tiny",
    tokens: tuple[int, ...] = (256,),
    dtype: str = "bfloat16",
    device: str = "auto",
    repeats: int = 3,
    methods: tuple[str, ...] | None = None,
    out: str | None = None,
) -> list[dict]:
    """Measure ``methods`` (default all of :data:`step_worker.METHODS`) at each token count;
    one JSON line each (``skipped`` / ``error`` where a method cannot run or crashed)."""
    from dft_mm.bench.measure import device_name
    from dft_mm.bench.step_worker import DTYPES, METHODS, SHAPES, StepConfig, unavailable

    methods = tuple(methods or METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UserError(f"unknown --methods {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    if shape not in SHAPES:
        raise UserError(f"unknown --shape {shape}; choose from {', '.join(SHAPES)}.")
    if dtype not in DTYPES or repeats < 0 or any(count < 2 for count in tokens):
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, --repeats >= 0 and every --tokens >= 2.")
    device = resolve_device(device)
    configs = [
        StepConfig(method=method, shape=shape, tokens=count, dtype=dtype, device=device, repeats=repeats)
        for count in tokens for method in methods
    ]
    return run_all("dft_mm.bench.step_worker", configs, unavailable, device_name(device), out, "bench step")
