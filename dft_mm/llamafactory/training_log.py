"""dft_mm's metrics (``nll``, ``mean_target_prob``, ``entropy``, ``kl``, ``weight_underflow``)
in LLaMA-Factory's ``trainer_log.jsonl``.

LlamaBoard draws its running-job plot from that file, which LLaMA-Factory's ``LogCallback``
writes with a fixed set of keys. The import hook wraps the callback so that, when a training
log carries dft_mm's statistics (runs with dft_mm keys), they are written too; other runs'
lines are unchanged.
"""

from __future__ import annotations

from types import ModuleType

from dft_mm.llamafactory.metrics import METRICS


def stats_at(state, step) -> dict:
    """dft_mm's statistics of the training log at ``step`` in ``state.log_history`` (or {})."""
    for entry in reversed(getattr(state, "log_history", None) or []):
        if entry.get("step") == step and "loss" in entry:
            return {key: entry[key] for key in METRICS if key in entry}
    return {}


def patch_callbacks_module(module: ModuleType) -> None:
    """Wrap ``LogCallback.on_log`` / ``_write_log`` (once) when they are the ones we know."""
    cls = getattr(module, "LogCallback", None)
    if cls is None or getattr(cls, "_dft_mm_patched", False) or not hasattr(cls, "_write_log"):
        return
    on_log, write_log = cls.on_log, cls._write_log

    def on_log_keeping_state(self, args, state, control, **kwargs):
        self._dft_mm_state = state
        return on_log(self, args, state, control, **kwargs)

    def write_log_with_stats(self, output_dir, logs):
        stats = stats_at(getattr(self, "_dft_mm_state", None), logs.get("current_steps"))
        return write_log(self, output_dir, {**logs, **stats})

    cls.on_log, cls._write_log, cls._dft_mm_patched = on_log_keeping_state, write_log_with_stats, True
