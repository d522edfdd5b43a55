"""A real headless browser for tests: Debian's chromium driven by Playwright.

Playwright only drives the system browser (``executable_path``); it never downloads one. The
flags keep chromium offline and quiet on a headless machine (root, no GPU, no display), and each
session gets a fresh profile (``--user-data-dir``) inside the test's temporary folder.

Usage::

    from browser import chromium_page

    def test_page(tmp_path):
        with chromium_page(tmp_path) as session:
            session.page.goto(url)            # any Playwright Page call
            assert session.errors == []       # console errors, uncaught exceptions, failed requests
            session.screenshot("page.png")    # kept in tmp_path

Skips the test (with the reason) when chromium or the playwright package is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def chromium_executable() -> str:
    """Path of Debian's chromium; skips the calling test when it is not installed."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (scripts/install-toolchains.sh installs it with apt)")
    return path


@dataclass
class BrowserSession:
    """An open page plus everything that went wrong on it so far."""

    page: object  # playwright.sync_api.Page
    folder: Path
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [*self.console_errors, *self.page_errors, *self.failed_requests]

    def screenshot(self, name: str = "screenshot.png") -> Path:
        path = self.folder / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def chromium_page(folder: Path, width: int = 1400, height: int = 900) -> Iterator[BrowserSession]:
    """A fresh headless chromium (own profile under ``folder``) with one page; closed on exit."""
    executable = chromium_executable()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is in the dev extra")
    folder.mkdir(parents=True, exist_ok=True)
    profile = folder / "chromium-profile"
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS),
            viewport={"width": width, "height": height},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            session = BrowserSession(page, folder)
            page.on("console", lambda message: session.console_errors.append(message.text)
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: session.page_errors.append(str(error)))
            page.on("requestfailed", lambda request: session.failed_requests.append(f"{request.url}: {request.failure}"))
            yield session
        finally:
            context.close()


def image_widths(session: BrowserSession) -> list[int]:
    """``naturalWidth`` of every ``<img>`` on the page once it has loaded (0 = not decoded)."""
    session.page.wait_for_load_state("load")
    return session.page.evaluate("Array.from(document.images).map(image => image.complete ? image.naturalWidth : 0)")
