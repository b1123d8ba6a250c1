"""Sources: one object per video source whose read() is one connection (or one pass over a file)."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator

from longwatch.ingest.clock import LiveClock
from longwatch.ingest.config import IngestConfig
from longwatch.ingest.errors import IngestError
from longwatch.ingest.probe import VideoInfo, probe
from longwatch.ingest.readers import Frame, ReadStats, Select, choose_reader, read_file

log = logging.getLogger(__name__)


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
        self.live = cfg.realtime

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
