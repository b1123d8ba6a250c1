"""Helpers for the ingest tests: generated videos (PyAV), free ports, loopback HTTP and RTSP servers.

The RTSP server is eval/rtsp_server.py, started by eval/rtsp_peer.py (also used by `longwatch bench rtsp-soak`).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from longwatch.eval import rtsp_peer
from longwatch.eval.rtsp_peer import RtspServer  # noqa: F401 (shared with the soak bench)


def frame_value(i: int) -> int:
    """Grey level of generated frame i: frames can be told apart after lossy coding."""
    return (i * 7) % 200 + 20


def make_video(path: Path, seconds: float = 4.0, fps: float = 30, size: tuple[int, int] = (120, 160),
               codec: str = "libx264", fmt: str | None = None, gop: int | None = None) -> Path:
    """Write a video whose frame i is flat grey frame_value(i) with a white bar at column 4*i."""
    h, w = size
    n = max(1, round(seconds * fps))
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=round(fps) if float(fps).is_integer() else fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.options = {"preset": "ultrafast", **({"g": str(gop)} if gop else {})}
        for i in range(n):
            img = np.full((h, w, 3), frame_value(i), np.uint8)
            x = (4 * i) % max(1, w - 4)
            img[:, x:x + 4] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_audio(path: Path, seconds: float = 1.0) -> Path:
    """An AAC-only .m4a file (no video stream)."""
    rate = 44100
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        samples = (np.sin(np.arange(int(seconds * rate)) / 20) * 0.3).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start:start + 1024][None]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[str]:
    """Serve `root` on loopback; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung camera); yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(sock.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(1)
        for s in held:
            s.close()
        sock.close()



@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port where a connect() is never answered, like a host that does not route; yields the port.

    A listener with backlog 0 that never accepts, its one queue slot taken: Linux drops further SYNs,
    so the client waits in SYN_SENT until its own timeout. Nothing leaves the machine.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        with contextlib.suppress(TimeoutError):
            probe.connect(("127.0.0.1", port))
            raise RuntimeError(f"port {port} answered a connect: this kernel does not drop SYNs on a full backlog")
    finally:
        probe.close()
    try:
        yield port
    finally:
        filler.close()
        sock.close()


UNRESOLVABLE_HOST = "camera-" + "0" * 57 + ".lan"
"""A host name no resolver can look up: its first label is 64 octets, over DNS's 63 (RFC 1035), so the
lookup fails inside the C library before any query is sent (no DNS server is asked)."""


@functools.cache
def rtsp_missing() -> str | None:
    """None if GstRtspServer can run here, else the missing Debian package(s)."""
    return rtsp_peer.missing()


def require_rtsp() -> None:
    missing = rtsp_missing()
    if missing:
        pytest.skip(f"RTSP server unavailable: missing Debian package {missing}")
