"""The browser's webcam as an ingest Source: frames pushed by the page, stamped by their arrival time."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from longwatch.ingest.sources import Frame, Select, Source

# A few seconds of frames at the page's send rate; older ones are dropped when ingest falls behind,
# like a live camera (PatchStream counts drops after sampling; these happen before it).
_QUEUE_FRAMES = 16
PAUSE_S = 2.0
"""Frames further apart than this (the user paused the camera) end one read, like a reconnect."""


@dataclass(frozen=True)
class StreamEnd:
    at: float
    """time.monotonic() when the page's stream event ended."""
    wall: float
    """The same moment as time.time(), for the page's message."""
    ran_s: float
    """Seconds from the event's first frame to its end."""


class BrowserCamSource(Source):
    """Frames arrive from Gradio's streaming Image event (one every `stream_every` seconds).

    The page sends no capture times, so arrival time on the server clock is the timestamp: the same
    choice ingest makes for local webcams. Time keeps running while the user pauses the camera, so a
    pause shows up as a gap before the next patch, never as frames squeezed together. read() waits
    for frames until close(); when frames resume after a pause it returns (the resumed frame is kept
    for the next read), so PatchStream treats the pause like a reconnect: no temporal patch pairs a
    frame from before the pause with one from after it, and the pause is counted as a gap.
    """

    live = True
    reconnects = True
    watchdog = False  # waiting for the user is not a stalled read

    def __init__(self, name: str = "browser webcam") -> None:
        self.name = name
        self.dropped = 0
        self.last_frame_at: float | None = None
        """time.monotonic() of the newest frame pushed, None before the first."""
        self.run_started_at: float | None = None
        """time.monotonic() of the first frame of the page's current stream event (None between events)."""
        self.last_end: StreamEnd | None = None
        """How the page's last stream event ended, None before the first end."""
        self._frames: queue.Queue[Frame] = queue.Queue(_QUEUE_FRAMES)
        self._resumed: Frame | None = None
        self._t0: float | None = None
        self._closed = threading.Event()

    def push(self, frame: np.ndarray, now: float | None = None) -> float:
        """Hand one RGB uint8 [H, W, 3] frame from the page to ingest; returns its stream time."""
        if frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.dtype != np.uint8:
            raise ValueError(f"webcam frame must be uint8 [H, W, 3], got {frame.shape} {frame.dtype}")
        now = time.monotonic() if now is None else now
        if self._t0 is None:
            self._t0 = now
        self.last_frame_at = now
        if self.run_started_at is None:
            self.run_started_at = now
        t = now - self._t0
        item = (np.array(frame[..., :3]), t)  # a copy: Gradio's array is read-only
        while True:
            try:
                self._frames.put_nowait(item)
                return t
            except queue.Full:
                try:
                    self._frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def stream_ended(self, now: float | None = None, wall: float | None = None) -> StreamEnd:
        """The page's stream event ended (Gradio's time limit, Record stopped, the tab gone); frames may follow
        in a new event. Returns (and keeps as `last_end`) when it ended and how long it ran."""
        now = time.monotonic() if now is None else now
        ran = now - self.run_started_at if self.run_started_at is not None else 0.0
        self.run_started_at = None
        self.last_end = StreamEnd(now, time.time() if wall is None else wall, ran)
        return self.last_end

    def read(self, select: Select) -> Iterator[Frame]:
        last: float | None = None
        while not self._closed.is_set():
            if self._resumed is not None:
                (frame, t), self._resumed = self._resumed, None
            else:
                try:
                    frame, t = self._frames.get(timeout=0.25)
                except queue.Empty:
                    continue
            if last is not None and t - last > PAUSE_S:
                self._resumed = (frame, t)
                return
            last = t
            if select(t):
                yield frame, t

    def close(self) -> None:
        self._closed.set()
