"""`longwatch serve` from the command line: one line and exit 2 for what cannot start; a real start prints the
URL and the model, serves the API and (with --ui) the Gradio page in the same app, and stops on SIGINT."""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from longwatch.app.cli import main
from tests.ingest_fixtures import free_port


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


def test_taken_port_is_one_line_and_exit_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        t0 = time.monotonic()
        rc, err = _run(["serve", "--port", str(port), "--model", "tiny"])
    assert rc == 2 and err.strip() == f"longwatch: error: cannot serve on 127.0.0.1:{port}: Address already in use"
    assert time.monotonic() - t0 < 5  # before the model loads


@pytest.mark.parametrize("argv,needle", [
    (["--host", "999.1.1.1"], "cannot serve on 999.1.1.1:8000: not an address of this machine"),
    (["--host", "0.0.0.0"], "refusing to serve 0.0.0.0 without API keys"),  # checked before anything is bound
    (["--port", "70000"], "serve.port: must be in 1..65535"),
    (["--allowed-source-hosts", "10.0.0.0/99"], "allowed_source_hosts"),
    (["--api-key-file", "/nonexistent/keys"], "cannot read the API key file /nonexistent/keys"),
    (["--reasoning-parser", "deepseek"], "reasoning_parser"),
    (["--host", "0.0.0.0", "--ui", "KEYS"], "refusing to serve the page (--ui) on 0.0.0.0 without a login"),
])
def test_bad_settings_are_one_line_and_exit_2(argv, needle, monkeypatch):
    monkeypatch.delenv("LONGWATCH_API_KEYS", raising=False)
    if "KEYS" in argv:  # keys given: the API is closed, the page still is not
        monkeypatch.setenv("LONGWATCH_API_KEYS", "k")
        argv = [a for a in argv if a != "KEYS"]
    rc, err = _run(["serve", *argv])
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def _line(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if select.select([proc.stdout], [], [], 0.5)[0]:
            return proc.stdout.readline()
    raise AssertionError(f"no startup line (exit {proc.poll()}): {proc.stderr.read() if proc.poll() is not None else ''}")


def test_serve_prints_url_and_model_and_mounts_the_page():
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "LONGWATCH_API_KEYS": "k1"}
    proc = subprocess.Popen([sys.executable, "-m", "longwatch", "serve", "--model", "tiny", "--port", str(port),
                             "--ui", "--frame-size", "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = _line(proc, 120)
        assert line.strip() == (f"longwatch serve: http://127.0.0.1:{port}/v1 (model tiny; page at "
                                f"http://127.0.0.1:{port}/ui; API key required)")
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/models").status_code == 401
        models = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer k1"}).json()
        assert [m["id"] for m in models["data"]] == ["tiny"]
        page = httpx.get(f"{base}/ui/", follow_redirects=True, timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, proc.stderr.read()
