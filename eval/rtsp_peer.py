"""A real RTSP camera on loopback for benches and tests: eval/rtsp_server.py in a subprocess of Debian's Python.

`missing()` names the Debian packages it lacks (None when it can run); `RtspServer` starts it, kills it
(SIGKILL, like a camera losing power) and starts it again on the same port.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
"""Debian's interpreter: the one with python3-gi (the project's venv has no `gi`)."""
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")

# Each GStreamer piece the server needs, with the Debian package that ships it.
_CHECK = """
import sys
try:
    import gi
except ImportError:
    print("python3-gi"); sys.exit(0)
try:
    gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer
except (ImportError, ValueError):
    print("gir1.2-gst-rtsp-server-1.0 (and gstreamer1.0-rtsp)"); sys.exit(0)
Gst.init(None)
for element, package in (("qtdemux", "gstreamer1.0-plugins-good"), ("rtph264pay", "gstreamer1.0-plugins-good"),
                         ("h264parse", "gstreamer1.0-plugins-bad")):
    if Gst.ElementFactory.find(element) is None:
        print(f"{package} (GStreamer element {element})")
"""


def missing() -> str | None:
    """None if the server can run here, else the missing Debian package(s), comma-separated."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} (Debian's python3, with python3-gi)"
    out = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        last = out.stderr.strip().splitlines()[-1:] or ["check failed"]
        return f"python3-gi / gstreamer ({last[0]})"
    return out.stdout.strip().replace("\n", ", ") or None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """The server streaming `video` at rtsp://127.0.0.1:port/live; start() again after kill() reuses the port."""

    def __init__(self, video: Path, port: int | None = None) -> None:
        self.video, self.port = Path(video), port or free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    def start(self, timeout: float = 20.0) -> None:
        """Returns once the server prints READY (clients can connect); retries while the port is still held."""
        deadline = time.monotonic() + timeout
        while True:
            self.proc = self._spawn()
            if self._wait_ready(deadline):
                return
            self.kill()
            if time.monotonic() + 0.5 > deadline:
                raise RuntimeError(f"RTSP server did not start on port {self.port} within {timeout:g} s")
            time.sleep(0.2)  # the previous server's port may not be free yet

    def kill(self) -> None:
        """SIGKILL: no RTSP teardown, the TCP connections just die, as when a camera loses power."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def _spawn(self) -> subprocess.Popen[str]:
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--video", str(self.video)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def _wait_ready(self, deadline: float) -> bool:
        """True when READY came; False when the server exited (or printed FAILED) or the deadline passed."""
        assert self.proc is not None and self.proc.stdout is not None
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.proc.stdout], [], [], left)[0]:
                return False
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return True
            if not line or line.startswith("FAILED"):
                return False
        return False

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
