"""Ingest building blocks without decoders: sampling by timestamp, pairing, live clock, queue, URLs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from longwatch.ingest.clock import MAX_DRIFT_S, LiveClock
from longwatch.ingest.errors import IngestError
from longwatch.ingest.patches import BoundedBuffer, Closed, PatchBuilder, TimestampSampler
from longwatch.ingest.patches import resize_frames, snap_frame_size
from longwatch.ingest.uri import parse_source, redact, scrub


def kept(sampler: TimestampSampler, times) -> list[float]:
    return [round(t, 4) for t in times if sampler(t)]


@pytest.mark.parametrize("src_fps", [30, 25, 29.97, 60])
def test_sampler_keeps_one_frame_per_tick_by_timestamp(src_fps):
    times = [i / src_fps for i in range(int(src_fps * 10))]
    out = kept(TimestampSampler(2.0), times)
    assert len(out) == 20
    # each kept frame is the first at or after its tick k/2: within one source frame of it
    for k, t in enumerate(out):
        assert k / 2 - 1e-3 <= t < k / 2 + 1 / src_fps


def test_sampler_follows_timestamps_not_indices():
    # variable frame rate: a burst of frames, then a frame every 0.9 s
    times = [0.0, 0.01, 0.02, 0.03, 0.9, 1.8, 2.7, 3.6]
    assert kept(TimestampSampler(2.0), times) == [0.0, 0.9, 1.8, 2.7, 3.6]


def test_sampler_restarts_grid_after_a_gap_without_a_burst():
    s = TimestampSampler(2.0)
    before = kept(s, [i / 10 for i in range(10)])  # 0..0.9
    after = kept(s, [5.03 + i / 10 for i in range(10)])  # stream resumes at 5.03
    assert before == [0.0, 0.5]
    assert after == [5.03, 5.53]


def test_sampler_refuses_times_that_go_backwards():
    s = TimestampSampler(2.0)
    assert kept(s, [0.0, 0.5, 0.5, 0.2, 1.0]) == [0.0, 0.5, 1.0]


def test_patch_builder_pairs_at_a_fixed_size_chosen_from_the_first_frame():
    rng = np.random.default_rng(0)
    b = PatchBuilder("224")
    f0 = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    f1 = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)  # resolution change mid-stream
    assert b.add(f0, 0.0) is None
    frames, pts = b.add(f1, 0.5)
    size = snap_frame_size(480, 640, "224")
    assert frames.shape == (2, *size, 3) and frames.dtype == np.uint8 and pts == (0.0, 0.5)
    # exactly ingest.patches.resize_frames (the Qwen3-VL processor's resize)
    expect = resize_frames(f0[None], size)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(frames[0], expect)
    assert b.add(f0, 1.0) is None
    assert b.add(f0, 1.5)[0].shape == (2, *size, 3)


def test_patch_builder_pads_an_odd_last_frame_and_drops_it_before_a_gap():
    b = PatchBuilder("64x96")
    frame = np.zeros((50, 70, 3), np.uint8)
    b.add(frame, 0.0)
    frames, pts = b.flush()
    assert frames.shape == (2, 64, 96, 3) and pts == (0.0, 0.0)
    b.add(frame, 1.0)
    b.drop_held()
    assert b.flush() is None


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_live_clock_keeps_pts_spacing_and_records_reconnect_time_as_a_gap():
    now = FakeTime()
    clock = LiveClock(now)
    clock.new_connection()
    a = [clock.stamp(5000.0 + i / 10) for i in range(5)]  # camera pts start anywhere
    np.testing.assert_allclose(a, [0.0, 0.1, 0.2, 0.3, 0.4], atol=1e-9)
    now.now += 3.0  # 3 s to reconnect; the camera's pts restart at 0
    clock.new_connection()
    b = [clock.stamp(i / 10) for i in range(3)]
    np.testing.assert_allclose(b, [3.0, 3.1, 3.2], atol=1e-9)


def test_live_clock_uses_wall_time_without_pts_and_never_goes_back():
    now = FakeTime()
    clock = LiveClock(now)
    out = []
    for pts in (None, None, 10.0, 9.0, float("nan"), 10.0 + 2 * MAX_DRIFT_S):
        now.now += 0.5
        out.append(clock.stamp(pts))
    assert out[:2] == [0.0, 0.5]
    assert all(b >= a for a, b in zip(out, out[1:]))
    assert out[-1] == pytest.approx(2.5)  # bogus jump in pts: wall clock wins


def test_buffer_files_wait_live_drops_oldest():
    buf: BoundedBuffer[int] = BoundedBuffer(2)
    assert buf.put(1) and buf.put(2)
    assert buf.put(3, timeout=0.05) is False  # full: a file decoder waits
    assert buf.put_drop_oldest(3) == [1]  # a live source drops the oldest
    assert [buf.get(), buf.get()] == [2, 3]
    assert buf.get(timeout=0.01) is None


def test_buffer_close_wakes_a_blocked_consumer_and_drains():
    buf: BoundedBuffer[int] = BoundedBuffer(4)
    buf.put(7)
    buf.close()
    assert buf.get() == 7
    with pytest.raises(Closed):
        buf.get()
    empty: BoundedBuffer[int] = BoundedBuffer(1)
    threading.Timer(0.05, empty.close).start()
    t0 = time.monotonic()
    with pytest.raises(Closed):
        empty.get()
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("rtsp://admin@cam/x", "rtsp://***@cam/x"),
    ("https://cdn.example/live.m3u8?token=s3cr3t&q=1", "https://cdn.example/live.m3u8?token=***&q=1"),
    ("/videos/a.mp4", "/videos/a.mp4"),
])
def test_redact_removes_credentials(url, shown):
    assert redact(url) == shown


def test_scrub_removes_credentials_quoted_in_decoder_messages():
    url = "rtsp://admin:hunter2@cam:554/x"
    msg = f"[Errno 111] Connection refused: '{url}'"
    assert "hunter2" not in scrub(msg, url) and "admin" not in scrub(msg, url)
    assert "hunter2" not in scrub("rtmp://u:hunter2@h/app failed")


def test_parse_source_kinds(tmp_path):
    f = tmp_path / "a.mp4"
    f.write_bytes(b"x")
    assert parse_source("0").kind == "webcam" and parse_source(2).target == 2
    assert parse_source("/dev/video1").kind == "webcam"
    assert parse_source(str(f)).kind == "file"
    assert parse_source(f"file://{f}").target == str(f)
    spec = parse_source("rtsp://u:p@cam/x")
    assert spec.kind == "network" and spec.display == "rtsp://***@cam/x"


@pytest.mark.parametrize("bad, code", [
    ("ftp://u:pw@host/x.mp4", "unsupported_scheme"),
    ("udp://239.0.0.1:1234", "unsupported_scheme"),
    ("/nonexistent/video.mp4", "not_found"),
    ("rtsp:///nohost", "bad_url"),
])
def test_parse_source_rejects_with_a_specific_error(bad, code):
    with pytest.raises(IngestError) as e:
        parse_source(bad)
    assert e.value.code == code and "pw" not in str(e.value)
