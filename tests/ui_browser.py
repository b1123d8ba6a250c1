"""Helpers for the browser tests: Debian's Chromium through Playwright, a `longwatch` server subprocess, screenshots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ingest_fixtures import free_port

CHROMIUM = "/usr/bin/chromium"
# Flags the project runs Chromium with: no sandbox (containers), nothing phoning home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Chromium's built-in test camera (a moving pattern) and auto-granted permission, for the webcam tab.
FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LONGWATCH_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"


def require_browser() -> None:
    """Skip, naming what is missing, unless Playwright and Debian's Chromium are both here."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} missing: Debian package chromium (.ci/install-system-deps.sh installs it)")


class Server:
    """`python -m app VERB ...` on a free loopback port, its log in the artifacts folder."""

    def __init__(self, name: str, *args: str, cache: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"server-{name}.log"
        env = {**os.environ, "XDG_CACHE_HOME": str(cache), "GRADIO_ANALYTICS_ENABLED": "False",
               "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "w")  # noqa: SIM115 (open for the server's whole life; stop() closes it)
        self.proc = subprocess.Popen([sys.executable, "-m", "longwatch", "-v", *args, "--server-port", str(self.port)],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Gradio closes cleanly on Ctrl-C
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def shot(page, name: str) -> Path:
    """Screenshot of the whole page, kept as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def patches(page) -> int:
    loc = page.locator("#lw-patches")
    return int(loc.inner_text()) if loc.count() else 0


def state(page) -> str | None:
    loc = page.locator("#lw-state")
    return loc.get_attribute("data-state") if loc.count() else None


def player_time(page) -> float:
    return float(page.evaluate("() => document.querySelector('#lw-player video').currentTime"))


def ask(page, question: str, timeout: float = 60) -> list[int]:
    """Ask, wait for the finished answer; returns the lengths the answer text went through while streaming."""
    page.evaluate("""() => {
        window.__lens = [];
        const chat = document.querySelector('#lw-chat');
        window.__obs && window.__obs.disconnect();
        window.__obs = new MutationObserver(() => {
            const bots = chat.querySelectorAll('[data-testid=bot]');
            if (bots.length) window.__lens.push(bots[bots.length - 1].innerText.length);
        });
        window.__obs.observe(chat, {subtree: true, childList: true, characterData: true});
    }""")
    before = page.locator("#lw-chat .lw-foot, #lw-chat .lw-error").count()
    page.fill("#lw-question textarea", question)
    page.click("#lw-ask")
    wait_for(lambda: page.locator("#lw-chat .lw-foot, #lw-chat .lw-error").count() > before, timeout,
             f"the answer to {question!r}")
    return page.evaluate("() => window.__lens")
