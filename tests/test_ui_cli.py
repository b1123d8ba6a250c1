"""`longwatch ui` and `longwatch demo` flags: the web demo's names, loopback by default, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from longwatch.app.cli import build_parser
from longwatch.app.config import load_config
from longwatch.app.ui.server import parse_auth


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longwatch", *args], capture_output=True, text=True, timeout=120, env=env,
                          check=False)


def test_flags_match_the_qwen_web_demo_and_reach_the_config():
    args = build_parser().parse_args(["ui", "--server-name", "0.0.0.0", "--server-port", "8080", "--share",
                                      "--max-sessions", "2", "--model", "tiny"])
    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    cfg = load_config(None, overrides)
    assert (cfg.ui.server_name, cfg.ui.server_port, cfg.ui.share, cfg.ui.max_sessions) == ("0.0.0.0", 8080, True, 2)
    assert load_config().ui.server_name == "127.0.0.1" and not load_config().ui.share  # loopback unless told
    demo = build_parser().parse_args(["demo", "--server-port", "9000"])
    assert getattr(demo, "ui.server_port") == 9000 and not demo.cli


def test_parse_auth():
    assert parse_auth("ann:se:cret") == ("ann", "se:cret")
    assert parse_auth(None) is None
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(ValueError, match="USER:PASSWORD"):
            parse_auth(bad)


def test_a_malformed_login_is_one_line_before_anything_loads():
    r = _run("ui", "--auth", "nopassword")
    assert r.returncode == 2 and r.stderr.strip() == "longwatch: error: --auth must be USER:PASSWORD (from --auth)"
    r = _run("ui", "--server-port", "70000")
    assert r.returncode == 2 and "server_port" in r.stderr and "Traceback" not in r.stderr


def test_a_taken_port_is_one_line_before_the_model_loads():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = _run("ui", "--server-port", str(port))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"longwatch: error: cannot serve on 127.0.0.1:{port}: Address already in use"
