"""DFT in LlamaBoard: the real ``llamafactory-cli webui`` on 127.0.0.1, driven in Debian's
headless chromium (tests/browser.py), with the tiny offline model; plus the patch's pieces
on LLaMA-Factory's own web UI functions."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from browser import chromium_page
from conftest import OFFLINE_ENV
from dft_mm.demo.synthetic import text_problems, write_text_training_set
from helpers import BIN

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def webui(workdir: Path, env: dict | None = None):
    """``llamafactory-cli webui`` on a free 127.0.0.1 port (cwd ``workdir``); stopped on exit."""
    port = _free_port()
    full_env = {
        **os.environ, **OFFLINE_ENV, **(env or {}), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False", "BROWSER": "true", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    log = (workdir / "webui.log").open("w")
    server = subprocess.Popen([str(BIN / "llamafactory-cli"), "webui"], cwd=workdir, env=full_env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"webui did not start: {(workdir / 'webui.log').read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


def _named(label: str):
    return re.compile("^" + re.escape(label) + r"(\s|$)")  # a gradio label is followed by its info text


class Board:
    """LlamaBoard's components, found by their English labels in the visible tab."""

    def __init__(self, page):
        self.page = page

    def text(self, label: str, value: str) -> None:
        self.page.get_by_role("textbox", name=_named(label)).filter(visible=True).fill(value)

    def choose(self, label: str, value: str) -> None:
        self.page.get_by_role("listbox", name=_named(label)).filter(visible=True).click()
        self.page.get_by_role("option", name=value, exact=True).filter(visible=True).click()

    def number(self, label: str, value) -> None:
        box = self.page.get_by_role("spinbutton", name=_named(f"number input for {label}")).filter(visible=True)
        box.fill(str(value))
        box.press("Enter")

    def open(self, accordion: str) -> None:
        self.page.get_by_text(accordion, exact=True).filter(visible=True).click()

    def click(self, button: str) -> None:
        self.page.get_by_role("button", name=button, exact=True).filter(visible=True).click()


@pytest.fixture(scope="module")
def board_setup(tmp_path_factory, tiny_text_model):
    root = tmp_path_factory.mktemp("llamaboard")
    write_text_training_set(text_problems(120, seed=0), root / "data")  # 60 steps: the running plot gets drawn
    return root


def _fill_training_form(board: Board, model: Path, data: Path) -> None:
    board.page.get_by_role("listbox", name=_named("Model name")).wait_for(timeout=60_000)
    board.choose("Model name", "Custom")
    board.text("Model path", str(model))
    board.choose("Finetuning method", "full")
    board.choose("Chat template", "empty")
    board.text("Data dir", str(data))
    board.page.get_by_role("textbox", name=_named("Dataset")).filter(visible=True).click()
    board.page.get_by_role("option", name="synthetic_code", exact=True).filter(visible=True).click()
    board.page.keyboard.press("Escape")
    board.text("Epochs", "8")  # ~8 s of training on a fast CPU: the monitor polls every 2 s, so it draws while the job runs
    board.text("Max samples", "120")
    board.choose("Compute type", "fp32")  # no bf16 on this CPU
    board.number("Gradient accumulation", 1)
    board.open("Extra configurations")
    board.number("Logging steps", 1)


def test_choose_dft_preview_train_and_plot_nll_in_a_real_browser(board_setup, tiny_text_model):
    root = board_setup
    with webui(root) as url, chromium_page(root / "browser") as session:
        board = Board(session.page)
        session.page.goto(url, wait_until="load")
        _fill_training_form(board, tiny_text_model, root / "data")
        board.open("Loss (dft_mm)")
        board.choose("SFT loss", "asft")  # ASFT shows its own knob, LLaMA-Factory's asft_alpha
        session.page.get_by_text("ASFT alpha").filter(visible=True).wait_for()
        assert not session.page.get_by_text("DFT level").filter(visible=True).count()
        board.click("Preview command")
        preview = session.page.locator("code").filter(has_text="--sft_loss asft").filter(visible=True)
        preview.wait_for(timeout=30_000)
        assert "--asft_alpha 0.1" in preview.inner_text() and "--dft_level" not in preview.inner_text()
        board.choose("SFT loss", "dft")
        board.choose("DFT level", "geomean")
        board.choose("Fused head", "false")
        session.page.get_by_text("DFT alpha").filter(visible=True).wait_for()
        session.page.get_by_text("DFT weight floor").filter(visible=True).wait_for()
        session.screenshot("loss_group.png")
        loss_group = session.page.locator(".block", has=session.page.get_by_text("Loss (dft_mm)", exact=True)).last
        loss_group.screenshot(path=str(root / "browser" / "loss_group_only.png"))
        board.click("Preview command")
        preview = session.page.locator("code").filter(has_text="--sft_loss dft").filter(visible=True)
        preview.wait_for(timeout=30_000)
        command = preview.inner_text()
        for flag in ("--sft_loss dft", "--dft_level geomean", "--dft_alpha 1.0", "--dft_fused false"):
            assert flag in command, command
        assert "--asft_alpha" not in command and "--dft_min_weight" not in command  # no floor set: no key

        board.click("Start")
        plot = session.page.locator("[data-testid='matplotlib'] img, .gradio-plot img").filter(visible=True)
        try:
            plot.first.wait_for(timeout=300_000)  # LlamaBoard draws the curves only while the job runs
        except Exception as error:
            raise AssertionError(f"no loss plot while training; webui log:\n{(root / 'webui.log').read_text()[-3000:]}") from error
        saves = root / "saves" / "Custom" / "full"
        deadline = time.time() + 300
        while not list(saves.glob("*/trainer_state.json")):
            assert time.time() < deadline, (root / "webui.log").read_text()[-3000:]
            time.sleep(1)
        run = next(saves.glob("*/trainer_state.json")).parent
        session.screenshot("trained.png")

    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert steps and all("nll" in entry and "mean_target_prob" in entry for entry in steps)
    saved = yaml.safe_load((run / "training_args.yaml").read_text())
    assert (saved["sft_loss"], saved["dft_level"], saved["dft_alpha"], saved["dft_fused"]) == ("dft", "geomean", 1.0, "false")
    trainer_log = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]
    assert all("nll" in entry for entry in trainer_log if "loss" in entry)
    import llamafactory.webui.interface  # noqa: F401  (loading LlamaBoard applies the patch, as in the server)
    from llamafactory.webui import control  # the running view draws with control.gen_loss_plot

    figure = control.gen_loss_plot(trainer_log)
    assert [ax.get_ylabel() for ax in figure.axes] == ["loss", "nll", "mean_target_prob", "entropy"]
    assert (root / "browser" / "loss_group_only.png").stat().st_size > 5_000


def _create_ui_in_subprocess(env: dict, cwd: Path) -> dict:
    """Build LlamaBoard's UI in a fresh process (in ``cwd``: it writes llamaboard_cache/ there);
    whether it was patched and what the command cleaner keeps."""
    probe = """
import json
import llamafactory.webui.interface as interface
from llamafactory.webui import common
interface.create_ui()
print(json.dumps({
    "kept": common._clean_cmd({"dft_fused": False, "use_dora": False, "sft_loss": "dft"}),
    "patched": getattr(interface, "_dft_mm_patched", False),
}))
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **OFFLINE_ENV, **env}, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "log": proc.stdout + proc.stderr}


def test_extra_arguments_false_survives_the_command_cleaner(tmp_path):
    result = _create_ui_in_subprocess({}, tmp_path)
    assert result["kept"] == {"dft_fused": False, "sft_loss": "dft"}  # upstream's own False keys are still dropped


def test_disabled_hook_leaves_the_web_ui_exactly_as_upstream(tmp_path):
    result = _create_ui_in_subprocess({"DFT_MM_DISABLE": "1"}, tmp_path)
    assert result["patched"] is False and result["kept"] == {"sft_loss": "dft"}


def test_unknown_web_ui_layout_starts_unchanged_with_one_line(monkeypatch):
    from llamafactory.webui import interface

    from dft_mm.llamafactory import llamaboard

    monkeypatch.setattr(llamaboard, "SUPPORTED_VERSIONS", ("0.0.1",))
    monkeypatch.setattr(interface, "_dft_mm_patched", False, raising=False)
    original = interface.create_train_tab
    lines = []
    monkeypatch.setattr(llamaboard.logger, "warning", lines.append)
    llamaboard.patch_interface_module(interface)
    assert interface.create_train_tab is original
    assert len(lines) == 1 and "LlamaBoard left unchanged" in lines[0] and "0.9.5" in lines[0]


def test_loss_plot_adds_panels_only_for_runs_that_log_them():
    from llamafactory.extras.ploting import gen_loss_plot

    from dft_mm.llamafactory.llamaboard import loss_figure

    plain = [{"current_steps": i, "loss": 2.0 - 0.1 * i} for i in range(1, 6)]
    assert len(loss_figure(plain, gen_loss_plot).axes) == 1  # LlamaBoard's own figure
    dft = [{**entry, "nll": entry["loss"] * 3, "mean_target_prob": 0.1 * i} for i, entry in enumerate(plain, 1)]
    figure = loss_figure(dft, gen_loss_plot)
    assert [ax.get_ylabel() for ax in figure.axes] == ["loss", "nll", "mean_target_prob"]
    asft = [{**entry, "entropy": 5.0, "kl": 0.01 * i} for i, entry in enumerate(dft)]
    assert [ax.get_ylabel() for ax in loss_figure(asft, gen_loss_plot).axes] == ["loss", "nll", "mean_target_prob",
                                                                                  "entropy", "kl"]


def test_the_loss_group_stands_for_each_objectives_own_keys():
    from dft_mm.llamafactory.llamaboard import loss_keys

    assert loss_keys("default", "token", 1.0, 0.0, 0.1, 1.0, "auto") == {}
    assert loss_keys("dft", "sentence", 0.5, 0.0, 0.1, 1.0, "auto") == {
        "sft_loss": "dft", "dft_level": "sentence", "dft_alpha": 0.5, "dft_fused": "auto"}
    assert loss_keys("dft", "token", 1.0, 0.05, 0.1, 1.0, "true")["dft_min_weight"] == 0.05
    assert loss_keys("asft", "sentence", 0.5, 0.05, 0.3, 1.0, "auto") == {
        "sft_loss": "asft", "asft_alpha": 0.3, "dft_fused": "auto"}
    assert loss_keys("eaft", "token", 1.0, 0.0, 0.1, 2.0, "false") == {
        "sft_loss": "eaft", "eaft_alpha": 2.0, "dft_fused": "false"}
