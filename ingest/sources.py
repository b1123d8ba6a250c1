"""Video sources: file probing, file readers by registry (PyAV, decord, OpenCV, torchcodec), and the Source classes.

`probe` checks a video file before decoding: one specific error per way a file can be unusable.
A reader yields (RGB frame, seconds) for the frames `select` keeps: it calls `select(t)` once per frame
in presentation order and converts only the frames it keeps to RGB, so sampling 2 fps from a 30 fps
file costs a decode, not a colour conversion, per skipped frame. Times are seconds from the first
frame. Which reader runs is logged, with its decode time per video; a reader that cannot open a file
falls back to the next one, with a warning. A `Source` is one object per video source whose read()
is one connection (or one pass over a file).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from longwatch.ingest.clock import LiveClock
from longwatch.ingest.config import IngestConfig
from longwatch.ingest.errors import IngestError
from longwatch.ingest.patches import sampled_frames

log = logging.getLogger(__name__)


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


Select = Callable[[float], bool]
Frame = tuple[np.ndarray, float]

# Assumed when a file has neither timestamps nor a frame rate: FFmpeg's own default.
DEFAULT_RATE = 25.0
# auto = the decode benchmark's winner among the readers always installed: sampling 2 fps from a 10-minute
# 720p30 H.264 file on 2 vCPUs, decord delivered 37.5 frames/s against PyAV's 23.1 and OpenCV's 16.9 (same
# pixels from all), at ~180 MiB more RSS; the optional torchcodec 43.7 (eval/results/decode_720p_10min.json).
AUTO_READER = "decord"
FALLBACK_ORDER = ("pyav", "decord", "opencv", "torchcodec")
_BATCH_BYTES = 64 * 2**20  # frames a random-access reader fetches per call: at most 8, and at most this many bytes


@dataclass
class ReadStats:
    """Counters of one file read, filled by the reader as it goes."""

    reader: str = ""
    seen: int = 0
    """Frames offered to select (decoded, or indexed for decord)."""
    kept: int = 0
    decode_errors: int = 0
    seconds: float = 0.0


def read_pyav(path: str, select: Select, stats: ReadStats, rate: float) -> Iterator[Frame]:
    """Sequential decode with FFmpeg; frames without pts are timed by index at `rate`."""
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first: float | None = None
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:  # a corrupt or truncated packet: skip it, as ffmpeg does
                stats.decode_errors += 1
                continue
            for frame in frames:
                t = frame.time if frame.time is not None else stats.seen / rate
                first = t if first is None else first
                stats.seen += 1
                if select(t - first):
                    stats.kept += 1
                    yield frame.to_ndarray(format="rgb24"), t - first


def read_decord(path: str, select: Select, stats: ReadStats, rate: float) -> Iterator[Frame]:
    """Random access: read every frame's timestamp from the index, then fetch only the kept frames."""
    import decord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
        stamps = vr.get_frame_timestamp(np.arange(len(vr)))[:, 0].astype(np.float64)
    except decord.DECORDError as e:
        raise IngestError(f"{path}: decord cannot read it ({_one_line(e)})", code="not_video") from None
    stamps -= stamps[0] if len(stamps) else 0.0
    yield from fetch_selected(stamps, select, stats, lambda idx: vr.get_batch(idx).asnumpy(), decord.DECORDError)


def fetch_selected(stamps: np.ndarray, select: Select, stats: ReadStats, get: Callable[[list[int]], np.ndarray],
                   errors: type[BaseException] | tuple[type[BaseException], ...]) -> Iterator[Frame]:
    """A random-access reader's frames (decord, torchcodec): every timestamp offered to `select`, then the kept
    frames fetched by index, `get(indices)` -> uint8 [n, H, W, 3], at most 8 and _BATCH_BYTES at a time; a
    fetch failing with `errors` ends the file there (a decode error)."""
    keep = []
    for i, t in enumerate(stamps):
        stats.seen += 1
        if select(float(t)):
            keep.append(i)
    batch, start = 1, 0  # one frame until the first tells its size
    while start < len(keep):
        idx = keep[start:start + batch]
        try:
            frames = get(idx)
        except errors:
            stats.decode_errors += 1
            return
        for i, frame in zip(idx, frames):
            stats.kept += 1
            yield frame, float(stamps[i])
        start += len(idx)
        batch = int(max(1, min(8, _BATCH_BYTES // max(1, frames[0].nbytes))))


def read_opencv(path: str, select: Select, stats: ReadStats, rate: float) -> Iterator[Frame]:
    """OpenCV's FFmpeg backend: grab every frame, retrieve and convert only the kept ones."""
    import cv2

    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise IngestError(f"{path}: OpenCV cannot open it", code="not_video")
        by_index = False  # set once POS_MSEC proves unusable (raw streams report 0 for every frame)
        last = -math.inf
        while cap.grab():
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if by_index or not math.isfinite(t) or t <= last:
                by_index = True
                t = stats.seen / rate
            last = t
            stats.seen += 1
            if select(t):
                ok, bgr = cap.retrieve()
                if not ok:
                    stats.decode_errors += 1
                    continue
                stats.kept += 1
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t
    finally:
        cap.release()


def read_torchcodec(path: str, select: Select, stats: ReadStats, rate: float) -> Iterator[Frame]:
    """torchcodec, in its own module (ingest/torchcodec_reader.py), loaded only when this reader runs."""
    from longwatch.ingest.torchcodec_reader import read_torchcodec as read

    yield from read(path, select, stats, rate)


# name -> reader(path, select, stats, rate); rate (frames/s, from the probe) times frames that carry no pts.
READERS: dict[str, Callable[[str, Select, ReadStats, float], Iterator[Frame]]] = {
    "pyav": read_pyav,
    "decord": read_decord,
    "opencv": read_opencv,
    "torchcodec": read_torchcodec,
}


def choose_reader(configured: str) -> str:
    """The reader to use: env LONGWATCH_READER, else the config value; auto is the benchmark winner."""
    name = os.environ.get("LONGWATCH_READER", "").strip().lower() or configured
    if name == "auto":
        return AUTO_READER
    if name not in READERS:
        raise IngestError(f"LONGWATCH_READER={name!r} is not one of auto, {', '.join(READERS)}", code="bad_reader")
    return name


def read_file(path: str, select: Select, reader: str, stats: ReadStats | None = None,
              rate: float | None = None) -> Iterator[Frame]:
    """Decode `path` with `reader`, falling back (logged) to the others if it fails before its first frame.

    rate: frames per second for files without timestamps (default: the probe's, else 25 as FFmpeg assumes).
    """
    rate = rate or DEFAULT_RATE
    stats = stats if stats is not None else ReadStats()
    order = [reader] + [r for r in FALLBACK_ORDER if r != reader]
    errors: list[str] = []
    for name in order:
        stats.reader, stats.seen, stats.kept, stats.decode_errors = name, 0, 0, 0
        start = time.perf_counter()
        frames = READERS[name](path, select, stats, rate)
        try:
            try:
                first = next(frames)
            except StopIteration:
                first = None
            except (IngestError, ImportError, RuntimeError, av.FFmpegError) as e:
                if stats.seen:  # select already consumed timestamps: a second reader would see none kept
                    raise IngestError(f"{path}: {name} failed while decoding ({_one_line(e)})",
                                      code="decode") from None
                errors.append(f"{name}: {_one_line(e)}")
                log.warning("reader %s failed on %s (%s); falling back", name, path, _one_line(e))
                continue
            if name != reader:
                log.warning("reader %s used for %s instead of %s", name, path, reader)
            if first is None:
                why = f"{stats.decode_errors} corrupt packets" if stats.decode_errors else "the video stream is empty"
                raise IngestError(f"{path}: no frame could be decoded ({why})", code="decode")
            yield first
            try:
                yield from frames
            except IngestError:
                raise
            except (RuntimeError, av.FFmpegError) as e:  # e.g. an I/O error while demuxing
                raise IngestError(f"{path}: {name} stopped decoding ({_one_line(e)})", code="decode") from None
            return
        finally:
            frames.close()
            stats.seconds = time.perf_counter() - start
            if stats.kept:
                log.info("decoded %s with %s: %d frames seen, %d kept, %d decode errors in %.2f s (%.0f frames/s)",
                         path, name, stats.seen, stats.kept, stats.decode_errors, stats.seconds,
                         stats.seen / max(stats.seconds, 1e-9))
    raise IngestError(f"{path}: no reader could decode it ({'; '.join(errors)})", code="decode")


def _one_line(e: BaseException) -> str:
    """An error as one line (its last), without decord's "[hh:mm:ss] src/file.cc:123: " prefix."""
    lines = str(e).strip().splitlines()
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", lines[-1]) if lines else type(e).__name__


class Source(ABC):
    """A video source yielding (RGB uint8 [H, W, 3], seconds) for the frames `select` keeps.

    Times are monotonic over the source's whole life, across reconnects. Flags tell PatchStream how
    to treat it: `live` (drop the oldest frames when the consumer lags; time runs on its own),
    `reconnects` (a lost connection is retried), `watchdog` (a read may block: abandon it after the
    timeouts). `name` never holds credentials. `note` explains an early end (truncated file).
    """

    name: str = ""
    live: bool = False
    reconnects: bool = False
    watchdog: bool = False
    note: str | None = None
    decode_errors: int = 0

    def frames_at(self, fps: float) -> int | None:
        """Frames sampled at `fps` over the whole source when its length is known (a file), else None (live)."""
        return None

    @abstractmethod
    def read(self, select: Select) -> Iterator[Frame]:
        """One connection: yields frames until the end of the source or the loss of the connection;
        raises IngestError when it cannot open or read."""


class FileSource(Source):
    """A local video file through the reader registry; with realtime, paced by the wall clock."""

    def __init__(self, path: str, cfg: IngestConfig) -> None:
        self.path, self.cfg = path, cfg
        self.name = path
        self.info: VideoInfo = probe(path)  # bad files fail here, before any thread starts
        self.reader = choose_reader(cfg.reader)
        if cfg.realtime and self.reader in ("decord", "torchcodec"):
            # decord and torchcodec select every timestamp before the first frame: the stream's live edge (and
            # its lag) would be the file's end from the start; a sequential reader meets timestamps as it plays
            log.info("%s: realtime playback reads with pyav instead of %s", path, self.reader)
            self.reader = "pyav"
        self.live = cfg.realtime

    def frames_at(self, fps: float) -> int | None:
        duration = self.info.duration_s
        return sampled_frames(duration, fps, self.info.rate) if duration else None

    def read(self, select: Select) -> Iterator[Frame]:
        stats = ReadStats()
        start = time.monotonic()
        last = 0.0
        try:
            for frame, t in read_file(self.path, select, self.reader, stats, rate=self.info.rate):
                if self.cfg.realtime:
                    time.sleep(max(0.0, start + t - time.monotonic()))
                last = t
                yield frame, t
        finally:
            self.decode_errors = stats.decode_errors
        self.note = self._truncation_note(last, stats)

    def _truncation_note(self, last: float, stats: ReadStats) -> str | None:
        duration = self.info.duration_s
        period = 1.0 / (self.info.rate or 25.0)
        if duration and last + 2 * period + max(1.0, 0.05 * duration) < duration:
            log.warning("%s: frames stop at %.1f s of %.1f s: the file is truncated or damaged",
                        self.name, last, duration)
            return f"frames stop at {last:.1f} s of {duration:.1f} s (truncated or damaged file)"
        if stats.decode_errors:
            return f"{stats.decode_errors} corrupt packets skipped"
        return None


class WebcamSource(Source):
    """A camera by device index (or /dev/videoN) through OpenCV, stamped by the wall clock.

    Webcam drivers report buffer times on their own clocks (often 0), so wall-clock time at grab is
    the only timestamp that is comparable across reconnects.
    """

    live = True
    reconnects = True
    watchdog = True

    def __init__(self, device: int | str, cfg: IngestConfig) -> None:
        self.device, self.cfg = device, cfg
        self.name = f"webcam {device}"
        self.clock = LiveClock()

    def read(self, select: Select) -> Iterator[Frame]:
        import cv2

        cap = cv2.VideoCapture(self.device)
        try:
            if not cap.isOpened():
                raise IngestError(f"{self.name}: cannot open the device (absent, busy or no permission)",
                                  code="unreachable")
            self.clock.new_connection()
            while cap.grab():
                t = self.clock.stamp(None)
                if select(t):
                    ok, bgr = cap.retrieve()
                    if ok:
                        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t
        finally:
            cap.release()
