"""dft_mm: Dynamic Fine-Tuning (DFT) as a selectable loss in LLaMA-Factory.

Importing this package is cheap (no torch); heavy modules load on demand.
"""

__version__ = "0.1.0"


def apply() -> None:
    """Patch LLaMA-Factory in this process (idempotent).

    Adds the ``sft_loss`` / ``dft_level`` / ``dft_alpha`` / ``dft_fused`` YAML keys and routes
    SFT losses through :mod:`dft_mm.losses`. Installed packages get this automatically
    through the ``dft_mm_hook.pth`` import hook; call it yourself when driving
    LLaMA-Factory from Python with the hook disabled.
    """
    from dft_mm.llamafactory.pth_hook import apply_all

    apply_all()
