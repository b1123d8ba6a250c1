"""File readers by registry (PyAV, decord, OpenCV): each yields (RGB frame, seconds) for the frames `select` keeps.

A reader calls `select(t)` once per frame in presentation order and converts only the frames it keeps
to RGB, so sampling 2 fps from a 30 fps file costs a decode, not a colour conversion, per skipped frame.
Times are seconds from the first frame. Which reader runs is logged, with its decode time per video;
a reader that cannot open a file falls back to the next one, with a warning.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from longwatch.ingest.errors import IngestError

log = logging.getLogger(__name__)

Select = Callable[[float], bool]
Frame = tuple[np.ndarray, float]

# Assumed when a file has neither timestamps nor a frame rate: FFmpeg's own default.
DEFAULT_RATE = 25.0
# auto = the decode benchmark's winner: sampling 2 fps from a 10-minute 720p30 H.264 file on 2 vCPUs,
# decord delivered 29.1 frames/s against PyAV's 21.4 and OpenCV's 21.2 (same pixels from all three),
# at ~370 MiB more peak RSS (eval/results/decode_720p_10min.json; README "Ingest").
AUTO_READER = "decord"
FALLBACK_ORDER = ("pyav", "decord", "opencv")
_DECORD_BATCH_BYTES = 64 * 2**20  # frames fetched per get_batch call: at most 8, and at most this many bytes


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
    keep = []
    for i, t in enumerate(stamps):
        stats.seen += 1
        if select(float(t)):
            keep.append(i)
    batch = 1  # until the first frame tells its size
    start = 0
    while start < len(keep):
        idx = keep[start:start + batch]
        try:
            frames = vr.get_batch(idx).asnumpy()
        except decord.DECORDError:
            stats.decode_errors += 1
            return
        for i, frame in zip(idx, frames):
            stats.kept += 1
            yield frame, float(stamps[i])
        start += len(idx)
        batch = int(max(1, min(8, _DECORD_BATCH_BYTES // max(1, frames[0].nbytes))))


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


# name -> reader(path, select, stats, rate); rate (frames/s, from the probe) times frames that carry no pts.
READERS: dict[str, Callable[[str, Select, ReadStats, float], Iterator[Frame]]] = {
    "pyav": read_pyav,
    "decord": read_decord,
    "opencv": read_opencv,
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
