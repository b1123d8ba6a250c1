"""Check a video file before decoding: one specific error per way a file can be unusable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import av

from longwatch.ingest.errors import IngestError


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream; rate and duration may be missing."""

    codec: str
    width: int
    height: int
    rate: float | None
    """Frames per second from the stream (guessed by FFmpeg when the container has none)."""
    duration_s: float | None
    frames: int | None


def usable_rate(*rates: Fraction | float | None) -> float | None:
    """First rate that is a positive finite number (containers report 0, 0/0 or 90000 tbr)."""
    for r in rates:
        if r is not None and 0 < float(r) < 1000:
            return float(r)
    return None


def probe(path: str) -> VideoInfo:
    """Open `path` with FFmpeg (through PyAV) and check it holds a decodable video stream.

    Raises IngestError with code empty, not_video, no_video_stream or unsupported_codec.
    """
    if os.path.getsize(path) == 0:
        raise IngestError(f"{path}: file is empty (0 bytes)", code="empty")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as e:
        raise IngestError(f"{path}: not a readable video file ({e.strerror or type(e).__name__})",
                          code="not_video") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            found = f" (found only {', '.join(kinds)} streams)" if kinds else ""
            raise IngestError(f"{path}: no video stream{found}", code="no_video_stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise IngestError(f"{path}: unsupported video codec (this FFmpeg build has no decoder for it)",
                              code="unsupported_codec")
        ctx = stream.codec_context
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        return VideoInfo(
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            rate=usable_rate(stream.guessed_rate, stream.average_rate, stream.base_rate),
            duration_s=duration,
            frames=stream.frames or None,
        )
