"""What ingest hands to the rest of longwatch: timestamped temporal patches and observable source state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TemporalPatch:
    """Two sampled frames at the stream's fixed per-frame size: one Qwen3-VL temporal patch.

    frames: uint8 [2, H, W, 3] RGB, H and W multiples of 32 (resized with ingest.resize.resize_frames).
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
