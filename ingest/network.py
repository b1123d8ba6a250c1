"""Network streams through PyAV: RTSP (over TCP), RTMP, HTTP(S) files and HLS, with open and read timeouts.

PyAV's own `timeout` interrupts FFmpeg's blocking I/O, but not everything honours it (name lookup,
some demuxers' handshakes), so PatchStream also runs a watchdog over every read of a network
source (`watchdog = True`) and abandons a read that outlives the timeouts.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator

import av

from longwatch.ingest.clock import LiveClock
from longwatch.ingest.config import IngestConfig
from longwatch.ingest.errors import IngestError
from longwatch.ingest.sources import DEFAULT_RATE, Frame, Select, Source, usable_rate
from longwatch.ingest.uri import LIVE_SCHEMES, redact, scrub


def ffmpeg_options(scheme: str, cfg: IngestConfig) -> dict[str, str]:
    """FFmpeg protocol options (microsecond timeouts) for `scheme`."""
    read_us = str(int(cfg.read_timeout_s * 1e6))
    opts = {"rw_timeout": read_us, "analyzeduration": "1000000", "probesize": "1000000"}
    if scheme in ("rtsp", "rtsps"):
        opts.update(rtsp_transport="tcp", timeout=read_us)  # "timeout": RTSP socket I/O timeout
    elif scheme in ("http", "https"):
        opts.update(reconnect="1", reconnect_delay_max="2")  # resume a dropped download of a file
    return opts


def open_error(e: Exception, url: str, timeout: float, waited: float = 0.0) -> IngestError:
    """A specific, credential-free IngestError for a failed open or read that took `waited` seconds.

    FFmpeg reports some timeouts as other errors (RTSP: "invalid data" once its socket timeout fires),
    so any unspecific failure that took the whole timeout counts as a timeout.
    """
    name = redact(url)
    code_of = {errno.ECONNREFUSED: "unreachable", errno.EHOSTUNREACH: "unreachable",
               errno.ENETUNREACH: "unreachable", errno.ETIMEDOUT: "timeout"}
    err = getattr(e, "errno", None)
    specific = isinstance(e, (av.HTTPError, av.ConnectionRefusedError)) or err in code_of
    if isinstance(e, av.ExitError) or err == errno.ETIMEDOUT or (not specific and waited >= 0.9 * timeout):
        return IngestError(f"{name}: no data within {timeout:g} s", code="timeout")
    if isinstance(e, av.HTTPNotFoundError):
        return IngestError(f"{name}: the server has no such stream (404)", code="not_found")
    if isinstance(e, (av.HTTPUnauthorizedError, av.HTTPForbiddenError)):
        return IngestError(f"{name}: access denied (check the credentials)", code="auth")
    if err in code_of:
        reason = getattr(e, "strerror", None) or str(e)
        return IngestError(f"{name}: {reason.lower()}", code=code_of[err])
    reason = scrub(getattr(e, "strerror", None) or str(e), url)
    if isinstance(e, av.InvalidDataError):
        return IngestError(f"{name}: not a video stream ({reason})", code="not_video")
    return IngestError(f"{name}: cannot open stream ({reason})", code="unreachable")


class NetworkSource(Source):
    """rtsp(s)/rtmp(s) are live; an http(s) URL is live when it has no duration (live HLS), else a file.

    Live streams are stamped by LiveClock (stream pts within a connection, wall clock across them).
    """

    watchdog = True

    def __init__(self, url: str, scheme: str, cfg: IngestConfig) -> None:
        self.url, self.scheme, self.cfg = url, scheme, cfg
        self.name = redact(url)
        self.live = self.reconnects = scheme in LIVE_SCHEMES
        self.clock = LiveClock()

    def read(self, select: Select) -> Iterator[Frame]:
        cfg = self.cfg
        start = time.monotonic()
        try:
            container = av.open(self.url, options=ffmpeg_options(self.scheme, cfg), metadata_errors="ignore",
                                timeout=(cfg.open_timeout_s, cfg.read_timeout_s))
        except av.FFmpegError as e:
            timeout = min(cfg.open_timeout_s, cfg.read_timeout_s)
            raise open_error(e, self.url, timeout, time.monotonic() - start) from None
        with container:
            if not container.streams.video:
                raise IngestError(f"{self.name}: no video stream", code="no_video_stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise IngestError(f"{self.name}: unsupported video codec", code="unsupported_codec")
            if self.scheme in ("http", "https"):
                self.live = self.reconnects = container.duration is None
            if not self.live:
                stream.thread_type = "AUTO"  # frame threads add latency: only where nobody waits live
            rate = usable_rate(stream.guessed_rate, stream.average_rate) or DEFAULT_RATE
            self.clock.new_connection()
            first: float | None = None
            index = 0
            last = time.monotonic()
            try:
                for packet in container.demux(stream):
                    try:
                        frames = packet.decode()
                    except av.FFmpegError:  # a lost or damaged packet: the next keyframe recovers
                        self.decode_errors += 1
                        continue
                    for frame in frames:
                        if self.live:
                            t = self.clock.stamp(frame.time)
                        else:
                            raw = frame.time if frame.time is not None else index / rate
                            first = raw if first is None else first
                            t = raw - first
                        index += 1
                        if select(t):
                            yield frame.to_ndarray(format="rgb24"), t
                        last = time.monotonic()
            except av.FFmpegError as e:
                raise open_error(e, self.url, cfg.read_timeout_s, time.monotonic() - last) from None
