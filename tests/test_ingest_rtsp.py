"""A real RTSP peer (GstRtspServer on loopback): stream, kill mid-stream, restart; stalls; backpressure."""

from __future__ import annotations

import os
import signal
import time

import pytest

from longwatch.ingest import IngestConfig, open_stream
from longwatch.ingest.errors import IngestError
from tests.ingest_fixtures import RtspServer, make_video, require_rtsp

pytestmark = pytest.mark.rtsp

# A reconnect lands at most reconnect_max_s after the server is back (plus the RTSP handshake).
CFG = IngestConfig(fps=2.0, frame_size="64", open_timeout_s=3.0, read_timeout_s=1.5,
                   reconnect_initial_s=0.25, reconnect_max_s=2.0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    require_rtsp()
    return make_video(tmp_path_factory.mktemp("rtsp") / "live.mp4", seconds=60, fps=15, size=(120, 160), gop=15)


class Recorder:
    """State changes with their monotonic arrival time."""

    def __init__(self) -> None:
        self.states = []

    def __call__(self, s) -> None:
        self.states.append((time.monotonic(), s))

    def first(self, state: str, after: float = 0.0):
        return next(((t, s) for t, s in self.states if s.state == state and t >= after), (None, None))


def take(stream, n: int, timeout: float) -> list:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        p = stream.get(timeout=0.2)
        if p is not None:
            out.append(p)
    assert len(out) == n, f"got {len(out)} of {n} patches in {timeout} s (state {stream.state})"
    return out


def test_reconnects_after_the_server_restarts_and_records_the_gap(clip):
    rec = Recorder()
    with RtspServer(clip) as server:
        url = server.url.replace("rtsp://", "rtsp://viewer:s3cret@")
        with open_stream(url, CFG, on_state=rec) as stream:
            before = take(stream, 3, timeout=15)
            server.kill()
            time.sleep(2.0)
            server.start()
            restarted = time.monotonic()
            after = take(stream, 3, timeout=15)
            stats = stream.stats()
    t_streaming, _ = rec.first("streaming", after=restarted)
    assert t_streaming is not None and t_streaming - restarted < 5.0
    _, reconnecting = rec.first("reconnecting")
    assert reconnecting.attempt >= 1 and reconnecting.next_retry_s > 0 and reconnecting.reason
    patches = before + after
    times = [t for p in patches for t in p.pts]
    assert times == sorted(times) and len(set(times)) == len(times)  # monotonic across the reconnect
    gap = after[0].gap_before
    assert gap >= 2.0 and after[0].t_start - before[-1].t_end == pytest.approx(gap)
    assert [p.index for p in patches] == list(range(6)) and stats.gaps == 1
    assert all("s3cret" not in repr(s) and "viewer" not in repr(s) for _, s in rec.states)


def test_a_stalled_server_is_detected_and_the_stream_resumes(clip):
    rec = Recorder()
    with RtspServer(clip) as server:
        with open_stream(server.url, CFG, on_state=rec) as stream:
            take(stream, 2, timeout=15)
            os.kill(server.proc.pid, signal.SIGSTOP)  # TCP stays open, no more data: only a timeout sees it
            stopped = time.monotonic()
            try:
                deadline = time.monotonic() + 10
                while rec.first("reconnecting")[0] is None and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            t_rec, state = rec.first("reconnecting")
            assert t_rec is not None and t_rec - stopped < CFG.read_timeout_s + 2 + 1.5
            after = take(stream, 2, timeout=15)
    assert after[0].gap_before > CFG.read_timeout_s


def test_live_source_drops_oldest_when_the_consumer_lags(clip):
    cfg = IngestConfig(fps=4.0, frame_size="64", queue_frames=4, open_timeout_s=3.0, read_timeout_s=2.0)
    with RtspServer(clip) as server:
        with open_stream(server.url, cfg) as stream:
            take(stream, 1, timeout=15)
            time.sleep(4.0)  # ~16 sampled frames arrive; the queue holds 4
            stats = stream.stats()
            assert stats.dropped_frames >= 6 and stats.queued_patches == 2
            assert stats.lag_s > 3.0  # the consumer is behind by its pause...
            p = stream.get(timeout=5)
            assert stream.stats().lag_s < 2.0  # ...and one patch later only by the queue
    assert p.gap_before >= 2.0  # the dropped span is recorded as a gap


def test_unknown_mount_is_not_found(clip):
    with RtspServer(clip) as server:
        with open_stream(server.url.replace("/live", "/nothing"), CFG) as stream:
            with pytest.raises(IngestError) as e:
                list(stream)
    assert e.value.code == "not_found" and stream.state.state == "failed"
