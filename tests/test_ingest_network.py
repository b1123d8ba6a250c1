"""Network sources on loopback: HTTP files, HLS, a hung server (watchdog), wrong ports, unreachable hosts.

Nothing leaves the machine: an unreachable host is a loopback port that never answers a connect, an
unresolvable one a name the C library rejects before sending a DNS query.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time

import av
import numpy as np
import psutil
import pytest

from longwatch.ingest import IngestConfig, open_stream
from longwatch.ingest.errors import IngestError
from longwatch.ingest.stream import WATCHDOG_GRACE_S
from tests.ingest_fixtures import UNRESOLVABLE_HOST, free_port, http_server, make_video, silent_server, unanswered_port

FAST = IngestConfig(fps=2.0, frame_size="64", open_timeout_s=1.0, read_timeout_s=1.0)


def finish(url: str, cfg: IngestConfig = FAST, limit_s: float = 15.0):
    """Stream to the end; returns (patches, states, error or None, seconds)."""
    states = []
    t0 = time.monotonic()
    err = None
    with open_stream(url, cfg, on_state=states.append) as stream:
        out = []
        try:
            out.extend(stream)
        except IngestError as e:
            err = e
    elapsed = time.monotonic() - t0
    assert elapsed < limit_s, f"took {elapsed:.1f} s"
    return out, states, err, elapsed


def test_http_file_is_read_like_a_file(tmp_path):
    make_video(tmp_path / "clip.mp4", seconds=3.0, fps=10)
    with http_server(tmp_path) as base:
        out, states, err, _ = finish(f"{base}/clip.mp4")
    assert err is None and [s.state for s in states] == ["connecting", "streaming", "ended"]
    assert [round(p.t_start, 2) for p in out] == [0.0, 1.0, 2.0]
    assert not states[-1].extra.get("live", False)


def test_hls_playlist(tmp_path):
    with av.open(str(tmp_path / "index.m3u8"), "w", format="hls",
                 options={"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}) as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt, s.options = 160, 120, "yuv420p", {"preset": "ultrafast", "g": "10"}
        for i in range(30):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((120, 160, 3), 8 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with http_server(tmp_path) as base:
        out, states, err, _ = finish(f"{base}/index.m3u8")
    assert err is None and states[-1].state == "ended" and len(out) == 3
    assert all(b.t_start > a.t_start for a, b in zip(out, out[1:]))


def test_http_404_is_not_found(tmp_path):
    with http_server(tmp_path) as base:
        out, states, err, _ = finish(f"{base}/missing.mp4")
    assert out == [] and err is not None and err.code == "not_found"
    assert states[-1].state == "failed" and states[-1].extra["code"] == "not_found"


def test_http_page_that_is_not_a_video(tmp_path):
    (tmp_path / "page.mp4").write_text("<html>login required</html>\n" * 20)
    with http_server(tmp_path) as base:
        out, states, err, _ = finish(f"{base}/page.mp4")
    assert err is not None and err.code == "not_video" and states[-1].state == "failed"


@pytest.mark.parametrize("scheme", ["rtsp", "rtmp", "http"])
def test_wrong_port_fails_fast_without_leaking_credentials(scheme, caplog):
    url = f"{scheme}://admin:hunter2@127.0.0.1:{free_port()}/live"
    with caplog.at_level(logging.DEBUG):
        out, states, err, elapsed = finish(url)
    assert err is not None and err.code == "unreachable" and elapsed < 5
    assert states[-1].state == "failed" and "refused" in states[-1].reason
    shown = caplog.text + str(err) + repr(states)
    assert "hunter2" not in shown and "admin" not in shown


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_hung_server_is_cut_off_by_the_timeouts(scheme):
    # accepts the connection, never answers: the open timeout (or the watchdog behind it) must fire
    with silent_server() as port:
        out, states, err, elapsed = finish(f"{scheme}://127.0.0.1:{port}/live")
    assert err is not None and err.code == "timeout"
    assert states[-1].state == "failed"
    assert elapsed < FAST.open_timeout_s + 2 + 3  # open timeout + watchdog grace + slack


@pytest.mark.parametrize("scheme", ["rtsp", "rtmp", "http"])
def test_unreachable_host_fails_in_bounded_time(scheme):
    # the TCP handshake is never answered (a host that does not route): the open timeout must end it
    with unanswered_port() as port:
        out, states, err, elapsed = finish(f"{scheme}://127.0.0.1:{port}/live")
    assert err is not None and err.code == "timeout" and states[-1].state == "failed"
    assert str(err) == f"{scheme}://127.0.0.1:{port}/live: no data within {FAST.open_timeout_s:g} s"
    assert states[-1].reason == str(err)
    assert elapsed < FAST.open_timeout_s + WATCHDOG_GRACE_S + 1


def test_unresolvable_host_fails_at_once_naming_the_source():
    url = f"rtsp://admin:hunter2@{UNRESOLVABLE_HOST}:554/live"
    out, states, err, elapsed = finish(url)
    assert out == [] and err is not None and err.code == "unreachable" and elapsed < 3
    assert str(err).startswith(f"rtsp://***@{UNRESOLVABLE_HOST}:554/live: cannot open stream")
    assert states[-1].state == "failed" and states[-1].reason == str(err) and "hunter2" not in repr(states)


def test_close_returns_while_a_read_is_blocked():
    with silent_server() as port:
        stream = open_stream(f"rtsp://127.0.0.1:{port}/x", IngestConfig(open_timeout_s=30, read_timeout_s=30))
        time.sleep(0.3)
        t0 = time.monotonic()
        stream.close()
        assert time.monotonic() - t0 < 2.5
        assert stream.state.state == "ended"


def _listening(port: int) -> bool:
    return any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
               for c in psutil.net_connections(kind="tcp"))


def test_rtmp_stream(tmp_path):
    # FFmpeg's own RTMP server mode (-listen 1) serves one player: enough for a live RTMP peer
    if shutil.which("ffmpeg") is None:
        pytest.skip("RTMP peer unavailable: missing Debian package ffmpeg")
    clip = make_video(tmp_path / "clip.mp4", seconds=20, fps=15, gop=15)
    port = free_port()
    server = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
                               "-f", "flv", "-listen", "1", f"rtmp://127.0.0.1:{port}/live/cam"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        states = []
        with open_stream(f"rtmp://127.0.0.1:{port}/live/cam", FAST, on_state=states.append) as stream:
            out = [stream.get(timeout=10) for _ in range(3)]
    finally:
        server.kill()
        server.wait(5)
    assert all(p is not None for p in out) and states[1].state == "streaming" and states[1].extra["live"]
    assert [p.index for p in out] == [0, 1, 2] and out[0].t_start < out[1].t_start < out[2].t_start
