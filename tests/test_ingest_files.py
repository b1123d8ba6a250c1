"""Files through PatchStream: same patches from every reader, env override, logged fallback, pacing, backpressure."""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import pytest

from longwatch.ingest import IngestConfig, open_source, open_stream
from longwatch.ingest.errors import IngestError
from longwatch.ingest.sources import READERS, choose_reader
from longwatch.ingest.stream import PatchStream
from longwatch.ingest.torchcodec_reader import video_decoder_class
from tests.ingest_fixtures import frame_value, make_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """4 s, 30 fps, 120x160."""
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=4.0, fps=30)


def why_missing(reader: str) -> str | None:
    """Why `reader` cannot run here (torchcodec is an optional extra paired with one torch release), or None."""
    if reader != "torchcodec":
        return None
    try:
        video_decoder_class()
    except ImportError as e:
        return str(e)
    return None


def needs(reader: str) -> None:
    if why := why_missing(reader):
        pytest.skip(why)


def patches(source, **cfg) -> tuple[list, PatchStream]:
    stream = open_stream(str(source), IngestConfig(**cfg))
    with stream:
        return list(stream), stream


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_gives_timestamped_fixed_size_patches(clip, reader, monkeypatch, caplog):
    needs(reader)
    monkeypatch.setenv("LONGWATCH_READER", reader)
    with caplog.at_level(logging.INFO, logger="longwatch.ingest"):
        out, stream = patches(clip, fps=2.0, frame_size="64")
    assert stream.state.state == "ended"
    assert f"with {reader}: 120 frames seen, 8 kept" in caplog.text and "falling back" not in caplog.text
    assert len(out) == 4 and [p.index for p in out] == [0, 1, 2, 3]
    for k, p in enumerate(out):
        assert p.frames.shape == (2, 64, 64, 3) and p.frames.dtype == np.uint8  # 120x160 in a 64x64 budget
        assert p.pts == pytest.approx((k, k + 0.5), abs=1e-3)
        assert p.t_start == p.pts[0] and p.t_end == pytest.approx(p.pts[1] + 0.5)
        # the frame at 0.5*j is source frame 15*j: its grey level survives coding
        for j, frame in enumerate(p.frames):
            assert abs(float(np.median(frame)) - frame_value(15 * (2 * k + j))) < 6


def test_readers_agree_on_pixels(clip, monkeypatch):
    got = {}
    for reader in [r for r in READERS if not why_missing(r)]:
        monkeypatch.setenv("LONGWATCH_READER", reader)
        got[reader] = np.stack([p.frames for p in patches(clip, fps=2.0, frame_size="64")[0]]).astype(int)
    for reader in got:
        assert np.abs(got[reader] - got["pyav"]).mean() < 1.0, reader


def test_target_fps_sets_the_patch_count(clip):
    out, _ = patches(clip, fps=4.0, frame_size="64")
    assert len(out) == 8
    # consecutive patches tile the stream, up to one source frame (1/30 s) of jitter
    assert all(abs(b.t_start - a.t_end) <= 1 / 30 + 1e-3 for a, b in zip(out, out[1:]))


def test_odd_frame_count_pads_the_last_patch(tmp_path):
    video = make_video(tmp_path / "odd.mp4", seconds=1.5, fps=10)  # sampled at 0, .5, 1.0
    out, _ = patches(video, fps=2.0, frame_size="64")
    assert len(out) == 2 and out[-1].pts == pytest.approx((1.0, 1.0))
    np.testing.assert_array_equal(out[-1].frames[0], out[-1].frames[1])


def test_env_overrides_config_and_bad_env_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LONGWATCH_READER", "opencv")
    assert choose_reader("decord") == "opencv"
    monkeypatch.setenv("LONGWATCH_READER", "ffmpeg-cli")
    with pytest.raises(IngestError, match="LONGWATCH_READER"):
        choose_reader("auto")


def test_reader_fallback_is_logged_with_decode_time(tmp_path, monkeypatch, caplog):
    # A raw H.264 stream has no container index: decord cannot read it, PyAV can.
    raw = make_video(tmp_path / "raw.h264", seconds=2.0, fps=30, fmt="h264")
    monkeypatch.setenv("LONGWATCH_READER", "decord")
    with caplog.at_level(logging.INFO, logger="longwatch.ingest"):
        out, stream = patches(raw, fps=2.0, frame_size="64")
    assert len(out) == 2 and stream.state.state == "ended"
    text = caplog.text
    assert "reader decord failed" in text and "falling back" in text
    assert "decoded" in text and "with pyav" in text and "frames/s" in text


def test_a_torchcodec_that_does_not_import_falls_back_logged(clip, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import torchcodec now raises ImportError
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    monkeypatch.setenv("LONGWATCH_READER", "torchcodec")
    with caplog.at_level(logging.INFO, logger="longwatch.ingest"):
        out, stream = patches(clip, fps=2.0, frame_size="64")
    assert len(out) == 4 and stream.state.state == "ended"
    assert "reader torchcodec failed" in caplog.text and "torchcodec is not installed" in caplog.text
    assert "with pyav" in caplog.text


def test_realtime_plays_at_wall_clock_pace(tmp_path):
    video = make_video(tmp_path / "rt.mp4", seconds=2.0, fps=10)
    t0 = time.monotonic()
    out, stream = patches(video, fps=2.0, frame_size="64", realtime=True)
    elapsed = time.monotonic() - t0
    assert len(out) == 2 and elapsed >= 1.4  # the last sampled frame is at 1.5 s
    assert stream.source.live  # backpressure as for a live source


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_realtime_file_has_its_live_edge_where_it_plays(tmp_path, reader):
    """The lag behind the live edge of a file played at wall-clock pace is what a camera's would be: decord
    selects every timestamp up front, which put the edge at the file's end (lag 88 s for a 90 s file)."""
    needs(reader)
    video = make_video(tmp_path / "cam.mp4", seconds=20.0, fps=10)
    stream = open_stream(str(video), IngestConfig(fps=2.0, frame_size="64", realtime=True, reader=reader))
    with stream:
        first = [stream.get(timeout=5.0) for _ in range(2)]
        lag = stream.stats().lag_s
    assert all(p is not None for p in first) and lag < 2.0


def test_files_wait_for_a_slow_consumer_and_drop_nothing(clip):
    stream = open_stream(str(clip), IngestConfig(fps=8.0, frame_size="64", queue_frames=2))
    with stream:
        time.sleep(0.5)  # the decoder fills the one-patch queue and waits
        assert stream.stats().queued_patches == 1
        out = list(stream)
    assert len(out) == 16 and stream.stats().dropped_frames == 0
    assert [p.index for p in out] == list(range(16))


def test_realtime_file_drops_oldest_when_the_consumer_lags(tmp_path):
    video = make_video(tmp_path / "live.mp4", seconds=3.0, fps=10)
    stream = open_stream(str(video), IngestConfig(fps=4.0, frame_size="64", queue_frames=2, realtime=True))
    with stream:
        time.sleep(3.5)  # consume nothing while the "live" file plays
        out = list(stream)
        stats = stream.stats()
    assert stats.dropped_frames >= 8 and len(out) <= 2
    assert len(out) + stats.dropped_frames // 2 == 6
    assert out[0].gap_before > 0 and stats.gaps >= 1  # what was dropped is a gap, not a silent jump


def test_state_callback_sees_each_change_in_order(clip):
    seen = []
    with open_stream(str(clip), IngestConfig(fps=2.0, frame_size="64"), on_state=seen.append) as stream:
        list(stream)
    assert [s.state for s in seen] == ["connecting", "streaming", "ended"]
    assert all(s.source == str(clip) for s in seen)


def test_close_mid_stream_returns_promptly_and_ends(clip):
    stream = open_stream(str(clip), IngestConfig(fps=8.0, frame_size="64", queue_frames=2))
    next(stream)
    t0 = time.monotonic()
    stream.close()
    assert time.monotonic() - t0 < 2.5
    assert stream.state.state == "ended" and stream.state.reason == "closed"
    with pytest.raises(StopIteration):
        next(stream)


def test_open_source_probes_files_up_front(clip):
    src = open_source(str(clip))
    assert src.info.width == 160 and src.info.height == 120 and src.info.rate == pytest.approx(30)
    assert not src.live and not src.reconnects
