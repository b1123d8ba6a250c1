"""Bad files: each gives a specific error or state within bounded time, never a hang or a crash."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from longwatch.ingest import IngestConfig, open_stream
from longwatch.ingest.errors import IngestError
from longwatch.ingest.patches import snap_frame_size
from longwatch.ingest.sources import READERS
from tests.ingest_fixtures import make_audio, make_video

CFG = IngestConfig(fps=2.0, frame_size="64")


def run(path, cfg=CFG, limit_s=20.0):
    """Stream `path` to the end; returns (patches, final state, seconds)."""
    t0 = time.monotonic()
    with open_stream(str(path), cfg) as stream:
        out = list(stream)
    elapsed = time.monotonic() - t0
    assert elapsed < limit_s
    return out, stream.state, elapsed


def open_error(path) -> IngestError:
    t0 = time.monotonic()
    with pytest.raises(IngestError) as e:
        open_stream(str(path), CFG)
    assert time.monotonic() - t0 < 5
    return e.value


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert open_error(tmp_path / "empty.mp4").code == "empty"


def test_text_file_named_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("these are not the frames you are looking for\n" * 50)
    err = open_error(tmp_path / "notes.mp4")
    assert err.code == "not_video" and "notes.mp4" in str(err)


def test_truncated_mp4_without_its_index(tmp_path):
    full = make_video(tmp_path / "full.mp4", seconds=4.0)  # moov atom written last
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert open_error(cut).code == "not_video"


def test_truncated_mp4_with_index_ends_early_and_says_so(tmp_path):
    full = make_video(tmp_path / "full.mp4", seconds=4.0, fmt="mp4")
    data = full.read_bytes()
    moov, mdat = data.find(b"moov"), data.find(b"mdat")
    assert 0 < mdat < moov
    # move the index in front of the data (as -movflags faststart does) by re-muxing, then cut the tail
    import av

    fast = tmp_path / "fast.mp4"
    with av.open(str(full)) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(src.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                dst.mux(p)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size * 2 // 5])
    out, state, _ = run(cut)
    assert state.state == "ended" and "truncated" in (state.reason or "")
    assert 1 <= len(out) < 4 and all(b.t_start > a.t_start for a, b in zip(out, out[1:]))


def test_audio_only_file(tmp_path):
    err = open_error(make_audio(tmp_path / "song.m4a"))
    assert err.code == "no_video_stream" and "audio" in str(err)


def test_unsupported_codec(tmp_path):
    avi = make_video(tmp_path / "m.avi", seconds=1.0, fps=10, codec="mpeg4")
    data = avi.read_bytes()
    assert data.count(b"FMP4") >= 1
    (tmp_path / "alien.avi").write_bytes(data.replace(b"FMP4", b"ZZZZ"))  # a codec tag FFmpeg does not know
    assert open_error(tmp_path / "alien.avi").code == "unsupported_codec"


@pytest.mark.parametrize("reader", sorted(READERS))
def test_zero_fps_in_metadata(tmp_path, reader, monkeypatch):
    avi = make_video(tmp_path / "m.avi", seconds=2.0, fps=10, codec="mpeg4")
    data = bytearray(avi.read_bytes())
    strh = data.find(b"strh")
    rate_at = strh + 8 + 4 + 4 + 4 + 2 + 2 + 4  # AVISTREAMHEADER dwScale, dwRate
    data[rate_at:rate_at + 8] = struct.pack("<II", 0, 0)
    avih = data.find(b"avih")
    data[avih + 8:avih + 12] = b"\0\0\0\0"  # dwMicroSecPerFrame
    (tmp_path / "nofps.avi").write_bytes(bytes(data))
    monkeypatch.setenv("LONGWATCH_READER", reader)
    out, state, _ = run(tmp_path / "nofps.avi")
    # FFmpeg (behind all three readers) times such a file at its default 25 fps: 20 frames = 0.8 s
    assert state.state == "ended" and len(out) == 1
    assert out[0].pts == pytest.approx((0.0, 0.52), abs=0.01)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_missing_timestamps_and_rate(tmp_path, reader, monkeypatch):
    raw = make_video(tmp_path / "cam.h264", seconds=3.0, fps=30, fmt="h264")  # elementary stream: no pts
    monkeypatch.setenv("LONGWATCH_READER", reader)
    out, state, _ = run(raw)
    assert state.state == "ended" and len(out) == 3
    starts = [p.t_start for p in out]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert starts[-1] == pytest.approx(2.0, abs=0.25)  # timed at the stream's own (SPS) rate or FFmpeg's 25


def test_8k_frames_come_out_at_the_fixed_size(tmp_path):
    big = make_video(tmp_path / "8k.mp4", seconds=1.0, fps=2, size=(4320, 7680))
    out, state, _ = run(big, IngestConfig(fps=2.0, frame_size="448"), limit_s=60)
    assert state.state == "ended" and len(out) == 1
    assert out[0].frames.shape == (2, *snap_frame_size(4320, 7680, "448"), 3)
    assert out[0].frames.nbytes < 2 * 448 * 448 * 3 * 1.2  # the queue never holds 8K frames


def test_directory_and_missing_file(tmp_path):
    assert open_error(tmp_path).code == "not_found"
    assert open_error(tmp_path / "nope.mp4").code == "not_found"


def test_unsupported_scheme_names_the_scheme_without_credentials():
    err = open_error("ftp://user:pa55@host/clip.mp4")
    assert err.code == "unsupported_scheme" and "'ftp'" in str(err) and "pa55" not in str(err)


def test_absent_webcam_fails_fast():
    states = []
    t0 = time.monotonic()
    with open_stream("63", CFG, on_state=states.append) as stream:
        with pytest.raises(IngestError):
            list(stream)
    assert time.monotonic() - t0 < 10
    assert states[-1].state == "failed" and "webcam 63" in states[-1].reason
    assert np.isfinite(states[-1].at)
