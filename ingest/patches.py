"""Frames to temporal patches: sampling by timestamp, Qwen3-VL's fixed frame size and resize, pairing, hand-off.

What ingest hands to the rest of longwatch is a `TemporalPatch` (and a `SourceState` for observers). On the
way, `TimestampSampler` keeps frames by timestamp at the target fps (not by frame index); `choose_frame_size`
(`frame_size`, or Qwen3-VL's min/max/total pixel knobs with qwen-vl-utils' rounding) and `resize_frames` give
the stream's fixed per-frame size and resize to it with Qwen3-VL's bicubic antialiased kernel, without
torchvision (the backbone patchifies frames of this size and imports `resize_frames` from here);
`PatchBuilder` pairs sampled frames; `BoundedBuffer` is the bounded hand-off between the decode thread and the
consumer (block when full, or drop the oldest).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from longwatch.ingest.config import IngestConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TemporalPatch:
    """Two sampled frames at the stream's fixed per-frame size: one Qwen3-VL temporal patch.

    frames: uint8 [2, H, W, 3] RGB, H and W multiples of 32 (resized with resize_frames, below).
    pts: presentation times of the two frames, seconds, monotonic across the stream.
    t_start = pts[0]; t_end = pts[1] + 1/fps: the span of the stream this patch stands for.
    gap_before: seconds of stream missing right before this patch (a reconnect), 0 if none.
    """

    index: int
    frames: np.ndarray
    pts: tuple[float, float]
    t_start: float
    t_end: float
    gap_before: float = 0.0

    @property
    def t_mid(self) -> float:
        """Mean time of the two frames: the time written in the prompt."""
        return (self.pts[0] + self.pts[1]) / 2

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


@dataclass(frozen=True)
class SourceState:
    """connecting | streaming | reconnecting | ended | failed, with details for the UI and `ingest --json`."""

    state: str
    source: str
    """The source with credentials removed."""
    attempt: int = 0
    next_retry_s: float | None = None
    reason: str | None = None
    at: float = 0.0
    """Wall-clock time (time.time()) of the change."""
    extra: dict = field(default_factory=dict)


# Timestamps from float32 indexes (decord) or rounded milliseconds (OpenCV) miss a tick by < 1 ms.
_EPS = 1e-3


class TimestampSampler:
    """Keeps the first frame at or after each tick of a 1/fps grid, whatever the source frame rate.

    The grid starts at the first frame. A frame more than one period past the due tick (a gap, a
    reconnect, a source slower than fps) is kept and the grid restarts there, so a gap never yields a
    burst. Times at or before the last kept frame are refused: kept times are strictly increasing.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._due: float | None = None
        self.last: float = -math.inf

    def __call__(self, t: float) -> bool:
        if t <= self.last or (self._due is not None and t < self._due - _EPS):
            return False
        if self._due is None or t - self._due >= self.period - _EPS:
            self._due = t  # first frame, or a jump: restart the grid here
        self._due += self.period
        self.last = t
        return True


MULTIPLE = 32
"""Height and width are multiples of this: Qwen3-VL's ViT patch (16) times its 2x2 merge."""


def snap_frame_size(height: int, width: int, frame_size: str | int) -> tuple[int, int]:
    """Target (H, W) for a stream whose frames are `height` x `width`.

    frame_size "S": keep the aspect ratio inside an S*S pixel budget; "HxW": that size. Both sides are
    rounded to the nearest multiple of 32 (at least 32), as Qwen3-VL's smart_resize does.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame has no pixels: {height}x{width}")
    spec = str(frame_size)
    if re.fullmatch(r"\d+x\d+", spec):
        h, w = (int(v) for v in spec.split("x"))
    elif spec.isdigit():
        budget = int(spec) ** 2
        scale = math.sqrt(budget / (height * width))
        h, w = height * scale, width * scale
    else:
        raise ValueError(f"frame_size {frame_size!r} is not S or HxW")
    if max(h, w) / max(1e-9, min(h, w)) > 200:
        raise ValueError(f"aspect ratio of {height}x{width} is above 200")
    return max(MULTIPLE, round(h / MULTIPLE) * MULTIPLE), max(MULTIPLE, round(w / MULTIPLE) * MULTIPLE)


VIDEO_MIN_PIXELS = 128 * MULTIPLE**2
"""Per-frame floor when min_pixels is not given: 128 tokens, qwen-vl-utils' VIDEO_MIN_TOKEN_NUM."""
VIDEO_MAX_PIXELS = 768 * MULTIPLE**2
"""Per-frame ceiling: 768 tokens, qwen-vl-utils' VIDEO_MAX_TOKEN_NUM; a larger max_pixels is capped to it there too."""


def smart_size(height: int, width: int, min_pixels: float, max_pixels: float) -> tuple[int, int]:
    """(H, W) by Qwen's smart_resize rules (factor 32), keeping the aspect ratio as closely as they allow.

    Each side goes to the nearest multiple of 32 (at least 32). If that is over max_pixels, the frame is scaled
    to max_pixels and each side rounded down; if under min_pixels, scaled to min_pixels and rounded up.
    One difference: a side never drops below 32 (qwen-vl-utils can give 0 at aspect ratios near 200).
    """
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels {max_pixels} is below min_pixels {min_pixels}")
    if height <= 0 or width <= 0 or max(height, width) / min(height, width) > 200:
        raise ValueError(f"{height}x{width}: no pixels, or an aspect ratio above 200")
    h, w = (max(MULTIPLE, round(v / MULTIPLE) * MULTIPLE) for v in (height, width))
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = (max(MULTIPLE, math.floor(v / beta / MULTIPLE) * MULTIPLE) for v in (height, width))
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = (math.ceil(v * beta / MULTIPLE) * MULTIPLE for v in (height, width))
    return h, w


def pixel_budget(min_pixels: int | None, max_pixels: int | None, total_pixels: int | None,
                 frames: int | None) -> tuple[int, float]:
    """Per-frame (floor, cap) in pixels, as qwen-vl-utils sizes a video of `frames` sampled frames.

    floor = min_pixels (default 128 tokens). cap = the least of 768 tokens and total_pixels per temporal patch
    (total_pixels / frames * 2: two frames share one patch's tokens), raised to 1.05 x floor if below it, then
    lowered to max_pixels if that is smaller. Without total_pixels or frames (a live stream) no total applies.
    """
    floor = VIDEO_MIN_PIXELS if min_pixels is None else min_pixels
    cap: float = VIDEO_MAX_PIXELS
    if total_pixels is not None and frames:
        cap = min(cap, total_pixels / frames * 2)
    cap = max(cap, int(floor * 1.05))
    if max_pixels is not None:
        if max_pixels > cap:
            log.warning("max_pixels %d is above the per-frame limit %d (768 tokens, or total_pixels over %s frames); "
                        "capped to it, as qwen-vl-utils does", max_pixels, int(cap), frames)
        cap = min(cap, max_pixels)
    return floor, cap


def sampled_frames(duration_s: float, fps: float, rate: float | None = None) -> int:
    """Frames the sampler keeps from a file of `duration_s` at `fps`, in whole temporal patches (even).

    With the source `rate` the last frame is at (round(duration * rate) - 1) / rate; the grid keeps one frame
    per 1/fps from 0 up to it. Without a rate, one per tick before the end.
    """
    if rate:
        last = (max(1, round(duration_s * rate)) - 1) / rate
        n = math.floor(last * fps + 1e-6) + 1
    else:
        n = max(1, math.ceil(duration_s * fps - 1e-6))
    return n + n % 2


def uses_pixel_knobs(cfg: IngestConfig) -> bool:
    """True when any of min_pixels, max_pixels, total_pixels is set: they size frames and frame_size is ignored."""
    return any(v is not None for v in (cfg.min_pixels, cfg.max_pixels, cfg.total_pixels))


def choose_frame_size(height: int, width: int, cfg: IngestConfig, frames: int | None = None) -> tuple[int, int]:
    """The stream's fixed (H, W) for frames of `height` x `width`; `frames`: sampled frames of a file, None if live.

    No pixel knob set: `cfg.frame_size` (snap_frame_size: nearest multiples of 32). Any set: qwen-vl-utils' video
    rules (pixel_budget, then smart_size) and frame_size is ignored; total_pixels needs `frames` (a file's
    duration), so a live stream is sized by min_pixels / max_pixels alone.
    """
    if not uses_pixel_knobs(cfg):
        return snap_frame_size(height, width, cfg.frame_size)
    if cfg.total_pixels is not None and not frames:
        log.warning("total_pixels %d does not apply to a live stream (no duration, so no frame count): frames are "
                    "sized by min_pixels / max_pixels alone", cfg.total_pixels)
    floor, cap = pixel_budget(cfg.min_pixels, cfg.max_pixels, cfg.total_pixels, frames)
    size = smart_size(height, width, floor, cap)
    log.info("frame size %dx%d for %dx%d frames (pixel knobs: per frame %d to %d pixels over %s frames; "
             "frame_size %s ignored)", *size, height, width, floor, int(cap), frames or "unknown", cfg.frame_size)
    return size


def resize_frames(frames: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, 3, h, w], bicubic with antialiasing (torchvision semantics on CPU)."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {tuple(x.shape)} {x.dtype}")
    x = x.permute(0, 3, 1, 2).contiguous()
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


class PatchBuilder:
    """Resizes kept frames to the stream's fixed size (chosen from the first frame) and pairs them.

    add() returns (frames uint8 [2, H, W, 3], (t0, t1)) once two frames are held, else None.
    Frames are resized as they arrive, so an 8K source never holds more than one full frame.
    size_for(height, width) picks the size (default: snap_frame_size with `frame_size`).
    """

    def __init__(self, frame_size: str, size_for: Callable[[int, int], tuple[int, int]] | None = None) -> None:
        self.frame_size = frame_size
        self.size_for = size_for or (lambda h, w: snap_frame_size(h, w, frame_size))
        self.size: tuple[int, int] | None = None
        self._held: tuple[np.ndarray, float] | None = None

    def add(self, frame: np.ndarray, t: float) -> tuple[np.ndarray, tuple[float, float]] | None:
        if self.size is None:
            self.size = self.size_for(frame.shape[0], frame.shape[1])
        small = resize_frames(frame[None], self.size)[0].permute(1, 2, 0).numpy()  # [3,h,w] -> [h,w,3]
        if self._held is None:
            self._held = (small, t)
            return None
        (first, t0), self._held = self._held, None
        return np.stack([first, small]), (t0, t)

    def drop_held(self) -> None:
        """Forget an unpaired frame (before a gap, so no patch spans a reconnect)."""
        self._held = None

    def flush(self) -> tuple[np.ndarray, tuple[float, float]] | None:
        """At the end of a file: pair the last odd frame with itself, as Qwen3-VL's processor pads."""
        if self._held is None:
            return None
        (frame, t), self._held = self._held, None
        return np.stack([frame, frame]), (t, t)


T = TypeVar("T")


class Closed(Exception):
    """get() on a closed buffer that has nothing left."""


class BoundedBuffer(Generic[T]):
    """A FIFO of at most `capacity` items, safe between threads.

    put(item, timeout) waits for room (files: the decoder waits for the consumer) and returns False on
    timeout; put_drop_oldest(item) never waits and returns the items it pushed out (live sources:
    the consumer always gets the newest). close() wakes everyone; get() then drains what is left and
    raises Closed.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T, timeout: float | None = None) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or len(self._items) < self.capacity, timeout):
                return False
            if not self._closed:
                self._items.append(item)
                self._cond.notify_all()
            return True

    def put_drop_oldest(self, item: T) -> list[T]:
        with self._cond:
            dropped = []
            while len(self._items) >= self.capacity:
                dropped.append(self._items.popleft())
            if not self._closed:
                self._items.append(item)
                self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None if `timeout` passes first; Closed once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._items, timeout):
                return None
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            raise Closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
