"""dft_mm's objectives in LlamaBoard (``llamafactory-cli webui``): a "Loss" group in the Train
tab (``sft_loss`` nll / dft / asft / eaft and each one's knobs), its keys in the previewed
command and the saved YAML, and dft_mm's metrics (``nll``, ``mean_target_prob``, ``entropy``,
``kl``) in the running job's plot.

Applied by the import hook when ``llamafactory.webui.interface`` loads, only to the web UI
layout this module knows (:data:`SUPPORTED_VERSIONS`); any other layout starts unchanged
after one logged line. With ``DFT_MM_DISABLE=1`` nothing here runs. The group's default,
``sft_loss: default``, adds no key at all: LLaMA-Factory's own loss, as for a YAML without
dft_mm keys.
"""

from __future__ import annotations

import logging
from types import ModuleType

from dft_mm.llamafactory.llamaboard_locales import LANGUAGES, LOSS_LOCALES
from dft_mm.llamafactory.upstream import SUPPORTED_VERSION, installed_version
from dft_mm.loss_spec import FUSED_MODES, LEVELS, LOSS_KEYS, OBJECTIVES

logger = logging.getLogger("llamafactory.dft_mm")

SUPPORTED_VERSIONS = (SUPPORTED_VERSION,)  # the layout is checked by version, the training code by fingerprint
SFT_LOSS_CHOICES = ("default", *OBJECTIVES)
PLOTTED = ("loss", "nll", "mean_target_prob", "entropy", "kl")  # panels, for the keys a run logged
# the group's inputs, in order; each objective's own knobs are shown only when it is chosen
INPUTS = ("sft_loss", "dft_level", "dft_alpha", "dft_min_weight", "asft_alpha", "eaft_alpha", "dft_fused")
KNOBS = {"dft": ("dft_level", "dft_alpha", "dft_min_weight"), "asft": ("asft_alpha",), "eaft": ("eaft_alpha",)}


def layout_problem(interface: ModuleType) -> str | None:
    """Why the installed web UI is not the layout this patch knows, or None."""
    version = installed_version()
    if version not in SUPPORTED_VERSIONS:
        return f"LLaMA-Factory {version} (the Loss group supports {', '.join(SUPPORTED_VERSIONS)})"
    from llamafactory.webui import common, control, locales, manager, runner

    needed = {
        "interface.create_train_tab": getattr(interface, "create_train_tab", None),
        "common._clean_cmd": getattr(common, "_clean_cmd", None),
        "control.gen_loss_plot": getattr(control, "gen_loss_plot", None),
        "runner.Runner._parse_train_args": getattr(runner.Runner, "_parse_train_args", None),
        "manager.Manager.get_base_elems": getattr(manager.Manager, "get_base_elems", None),
    }
    missing = [name for name, value in needed.items() if value is None]
    if missing or "extra_tab" not in locales.LOCALES:
        return f"the web UI lacks {', '.join(missing) or 'LOCALES[extra_tab]'}"
    return None


def loss_keys(sft_loss: str, level: str, alpha: float, min_weight: float, asft_alpha: float, eaft_alpha: float,
              fused: str) -> dict:
    """The YAML keys the Loss group's values stand for (none for ``default``; a weight floor
    only when it is set)."""
    if sft_loss == "default":
        return {}
    keys = {"sft_loss": sft_loss, "dft_fused": fused}  # "false" stays a string: the UI's cleaner drops False
    if sft_loss == "dft":
        keys.update(dft_level=level, dft_alpha=float(alpha))
        if float(min_weight) > 0:
            keys["dft_min_weight"] = float(min_weight)
    elif sft_loss == "asft":
        keys["asft_alpha"] = float(asft_alpha)
    elif sft_loss == "eaft":
        keys["eaft_alpha"] = float(eaft_alpha)
    return keys


def _create_loss_group():
    """The Loss accordion (LlamaBoard's look: an accordion of dropdowns and sliders)."""
    import gradio as gr

    with gr.Accordion(open=False) as dft_tab:
        with gr.Row():
            elems = {
                "sft_loss": gr.Dropdown(choices=list(SFT_LOSS_CHOICES), value="default"),
                "dft_level": gr.Dropdown(choices=list(LEVELS), value="token", visible=False),
                "dft_alpha": gr.Slider(minimum=0, maximum=2, value=1.0, step=0.05, visible=False),
                "dft_min_weight": gr.Slider(minimum=0, maximum=1, value=0.0, step=0.01, visible=False),
                "asft_alpha": gr.Slider(minimum=0, maximum=2, value=0.1, step=0.01, visible=False),
                "eaft_alpha": gr.Slider(minimum=0, maximum=4, value=1.0, step=0.05, visible=False),
                "dft_fused": gr.Dropdown(choices=list(FUSED_MODES), value="auto", visible=False),
            }
    shown = INPUTS[1:]

    def show(loss: str):
        visible = {*KNOBS.get(loss, ()), *(() if loss == "default" else ("dft_fused",))}
        return tuple(gr.update(visible=name in visible) for name in shown)

    elems["sft_loss"].change(show, [elems["sft_loss"]], [elems[name] for name in shown], queue=False)
    return {"dft_tab": dft_tab, **elems}


def _place_after(block, anchor) -> None:
    """Move ``block`` to just after ``anchor`` among its parent's children (the layout order)."""
    children = block.parent.children
    if anchor in children:
        children.remove(block)
        children.insert(children.index(anchor) + 1, block)


def _wrap_create_train_tab(original):
    def create_train_tab(engine):
        group = _create_loss_group()
        inputs = [group[key] for key in INPUTS]
        base_elems = engine.manager.get_base_elems
        # the tab registers its buttons with get_base_elems() plus its own inputs: ours join them
        engine.manager.get_base_elems = lambda: base_elems() | set(inputs)
        try:
            elem_dict = original(engine)
        finally:
            engine.manager.get_base_elems = base_elems
        _place_after(group["dft_tab"], elem_dict.get("extra_tab"))
        return {**elem_dict, **group}

    return create_train_tab


def _wrap_parse_train_args(original):
    def _parse_train_args(self, data):
        args = original(self, data)
        keys = loss_keys(*(data[self.manager.get_elem_by_id(f"train.{name}")] for name in INPUTS))
        clash = sorted(key for key in keys if key in args and args[key] != keys[key])
        if clash:
            raise ValueError(f"the Loss group and the extra arguments both set {', '.join(clash)}; keep one.")
        return {**args, **keys}

    return _parse_train_args


def _wrap_clean_cmd(original):
    def _clean_cmd(args):
        cleaned = original(args)
        # keep dft_mm's keys when False (e.g. {"dft_fused": false} typed into the extra arguments)
        return {**cleaned, **{key: args[key] for key in LOSS_KEYS if key in args and args[key] is False}}

    return _clean_cmd


def loss_figure(trainer_log: list[dict], upstream_plot):
    """LlamaBoard's loss plot, plus one panel for each of dft_mm's metrics the run logged
    (``nll``, ``mean_target_prob``, ``entropy``, ``kl``); otherwise exactly LlamaBoard's own figure."""
    if not any("nll" in entry for entry in trainer_log):
        return upstream_plot(trainer_log)
    import matplotlib.pyplot as plt
    from llamafactory.extras.ploting import smooth

    plt.close("all")
    plt.switch_backend("agg")
    keys = [key for key in PLOTTED if key == "loss" or any(key in entry for entry in trainer_log)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys) + 1, 3.6))
    for ax, key in zip(axes, keys):
        points = [(entry["current_steps"], entry[key]) for entry in trainer_log if entry.get(key) is not None]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
            ax.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
            ax.legend()
        ax.set_xlabel("step")
        ax.set_ylabel(key)
    fig.tight_layout()
    return fig


def patch_interface_module(interface: ModuleType) -> None:
    """Add the Loss group to LlamaBoard (once), or log why the web UI stays unchanged."""
    if getattr(interface, "_dft_mm_patched", False):
        return
    interface._dft_mm_patched = True
    problem = layout_problem(interface)
    if problem:
        logger.warning(f"dft_mm: LlamaBoard left unchanged: {problem}.")
        return
    from llamafactory.webui import common, control, locales, runner

    for name, entry in LOSS_LOCALES.items():
        locales.LOCALES.setdefault(name, {lang: entry.get(lang, entry["en"]) for lang in LANGUAGES})
    interface.create_train_tab = _wrap_create_train_tab(interface.create_train_tab)
    runner.Runner._parse_train_args = _wrap_parse_train_args(runner.Runner._parse_train_args)
    common._clean_cmd = _wrap_clean_cmd(common._clean_cmd)
    upstream_plot = control.gen_loss_plot
    control.gen_loss_plot = lambda trainer_log: loss_figure(trainer_log, upstream_plot)
