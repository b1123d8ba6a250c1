"""A bounded store of small JPEG thumbnails, one per ingested temporal patch, for the evidence strip."""

from __future__ import annotations

import base64
import bisect
import threading

import cv2
import numpy as np

THUMB_WIDTH = 96
"""Pixels; about 3 KB of JPEG at 4:3, small enough to inline in every answer."""
MAX_THUMBS = 1024
"""Per session: ~3 MB, and for a 2-fps stream one thumbnail per second of the last ~17 minutes
before thinning starts."""


def encode_thumb(frame: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """RGB uint8 [H, W, 3] -> JPEG bytes `width` pixels wide (aspect kept)."""
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 70])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


class Thumbnails:
    """Thumbnails keyed by patch start time, at most `capacity` of them, covering the whole stream.

    When full, every other thumbnail is dropped (oldest first kept), so coverage thins evenly over
    the stream instead of forgetting its beginning; lookups return the nearest stored time, so an
    evidence block always gets a picture from close to its span. Thread-safe: the ingest thread adds,
    answer threads read.
    """

    def __init__(self, capacity: int = MAX_THUMBS) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        self.capacity = capacity
        self._times: list[float] = []
        self._jpegs: list[bytes] = []
        self._stride = 1  # keep one patch in `stride` once thinning has started
        self._seen = 0
        self._lock = threading.Lock()

    def add(self, t: float, frame: np.ndarray) -> None:
        """Store a thumbnail of `frame` for time `t` (seconds; times arrive in increasing order)."""
        with self._lock:
            self._seen += 1
            if (self._seen - 1) % self._stride:
                return
        jpeg = encode_thumb(frame)  # outside the lock: readers never wait on JPEG encoding
        with self._lock:
            self._times.append(t)
            self._jpegs.append(jpeg)
            if len(self._times) > self.capacity:
                self._times, self._jpegs = self._times[::2], self._jpegs[::2]
                self._stride *= 2

    def nearest(self, t: float) -> bytes | None:
        """JPEG of the stored thumbnail closest to `t`, or None when empty."""
        with self._lock:
            if not self._times:
                return None
            i = bisect.bisect_left(self._times, t)
            if i == len(self._times) or (i > 0 and t - self._times[i - 1] <= self._times[i] - t):
                i -= 1
            return self._jpegs[i]

    def __len__(self) -> int:
        with self._lock:
            return len(self._times)
