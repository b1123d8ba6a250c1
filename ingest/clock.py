"""One monotonic timeline for a live stream across reconnects, anchored on the wall clock."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# A source clock further than this from the wall clock is not trusted (camera clock reset, bogus pts).
MAX_DRIFT_S = 5.0


class LiveClock:
    """Maps the pts of each connection to seconds since the stream first produced a frame.

    Within a connection, pts differences are kept (they are the camera's frame timing). At the start of
    every connection, and whenever pts are missing, go backwards or drift more than MAX_DRIFT_S from
    the wall clock, frames are stamped by the wall clock. So the time lost in a reconnect shows up as a
    gap, and the timeline never goes backwards.
    """

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._origin: float | None = None
        self._offset: float | None = None
        self.last = -math.inf

    def new_connection(self) -> None:
        self._offset = None

    def stamp(self, pts: float | None) -> float:
        now = self._now()
        if self._origin is None:
            self._origin = now
        wall = now - self._origin
        if pts is None or not math.isfinite(pts):
            t = wall
        else:
            t = pts + self._offset if self._offset is not None else -math.inf
            if t < self.last or abs(t - wall) > MAX_DRIFT_S:
                self._offset = wall - pts
                t = wall
        self.last = max(self.last, t)
        return self.last
