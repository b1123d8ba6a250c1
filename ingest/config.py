"""Ingest settings: sampling rate, per-frame size, reader choice, live-source timeouts and reconnect."""

from __future__ import annotations

import re
from dataclasses import dataclass

READERS = ("auto", "pyav", "decord", "opencv", "torchcodec")


@dataclass(frozen=True)
class IngestConfig:
    fps: float = 2.0
    """Frames sampled per second of video, by timestamp. Two frames make one temporal patch."""
    frame_size: str = "448"
    """Per-frame size fixed up front: "S" keeps the aspect ratio inside an SxS pixel budget, "HxW" is exact.
    Both sides are snapped to multiples of 32 (Qwen3-VL patch 16 x merge 2)."""
    min_pixels: int | None = None
    """Per-frame pixel floor, qwen-vl-utils' video `min_pixels` (unset: 128 tokens = 131072 when another knob is set).
    Setting any of min_pixels / max_pixels / total_pixels sizes frames by Qwen's smart_resize rules and ignores
    frame_size (README "Frame size")."""
    max_pixels: int | None = None
    """Per-frame pixel cap, qwen-vl-utils' video `max_pixels`; never above 768 tokens = 786432 (capped, warned)."""
    total_pixels: int | None = None
    """Pixel budget of a whole file, qwen-vl-utils' `total_pixels`: per frame at most total_pixels / frames * 2 (frames
    sampled at fps over the file's duration; two frames share a temporal patch). A live stream has no total: ignored."""
    reader: str = "auto"
    """File reader: auto (the benchmark winner, see README), pyav, decord, opencv or torchcodec (an optional extra:
    `pip install longwatch[torchcodec]`, needs the torchcodec release paired with the installed torch).
    The environment variable LONGWATCH_READER overrides it."""
    queue_frames: int = 64
    """Bounded queue between the decode thread and the consumer (frames)."""
    realtime: bool = False
    """Play files at wall-clock pace, to behave like a live source."""
    open_timeout_s: float = 10.0
    """Network sources: time allowed to open the stream."""
    read_timeout_s: float = 10.0
    """Network sources: time without a frame before the stream counts as stalled."""
    reconnect_initial_s: float = 0.5
    """First reconnect delay; doubles per attempt up to reconnect_max_s."""
    reconnect_max_s: float = 4.0
    """Cap on the reconnect delay (4 s: a restarted camera is back in under 5 s)."""
    reconnect_attempts: int = 0
    """Give up after this many consecutive failed attempts (0 = retry forever)."""

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 60:
            raise ValueError(f"fps: must be in (0, 60], got {self.fps}")
        if not re.fullmatch(r"\d+|\d+x\d+", str(self.frame_size)):
            raise ValueError(f"frame_size: {self.frame_size!r} is not S or HxW (e.g. 448 or 360x640)")
        sides = [int(v) for v in str(self.frame_size).split("x")]
        if min(sides) < 32 or max(sides) > 4096:
            raise ValueError(f"frame_size: sides must be in [32, 4096], got {self.frame_size}")
        for name in ("min_pixels", "max_pixels", "total_pixels"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1024):
                raise ValueError(f"{name}: must be a whole number of pixels >= 1024 (one 32x32 token), got {value!r}")
        floor = 128 * 32 * 32 if self.min_pixels is None else self.min_pixels
        if self.max_pixels is not None and self.max_pixels < floor:
            what = "min_pixels" if self.min_pixels is not None else "the default min_pixels (128 tokens)"
            raise ValueError(f"max_pixels: {self.max_pixels} is below {what}, {floor}")
        if self.reader not in READERS:
            raise ValueError(f"reader: {self.reader!r} is not one of {', '.join(READERS)}")
        if self.queue_frames < 2:
            raise ValueError(f"queue_frames: must be >= 2, got {self.queue_frames}")
        for name in ("open_timeout_s", "read_timeout_s", "reconnect_initial_s", "reconnect_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.reconnect_attempts < 0:
            raise ValueError(f"reconnect_attempts: must be >= 0, got {self.reconnect_attempts}")
