"""Sample frames by timestamp at the target fps (not by frame index)."""

from __future__ import annotations

import math

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
