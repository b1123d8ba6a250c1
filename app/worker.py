"""Background ingest shared by the UI and the HTTP server: patches from a PatchStream into one MemoryStream."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from longwatch.app.schema import ConfigError
from longwatch.app.ui.timelinks import format_clock
from longwatch.ingest import IngestError
from longwatch.ingest.patches import TemporalPatch

log = logging.getLogger(__name__)

RATE_WINDOW_S = 10.0
"""Ingest rate is measured over the last this many wall-clock seconds."""


@dataclass(frozen=True)
class WorkerStatus:
    """What the page shows about a session's source and memory, as one snapshot."""

    kind: str
    """upload | webcam | url"""
    source: str
    """The source's name, credentials removed."""
    state: str
    """connecting | streaming | reconnecting | ended | failed (ingest's SourceState)."""
    attempt: int = 0
    next_retry_s: float | None = None
    reason: str | None = None
    patches: int = 0
    """Temporal patches encoded into memory."""
    t_last: float = 0.0
    """End of the newest patch in memory, stream seconds: the live edge as the model knows it."""
    rate: float = 0.0
    """Stream seconds encoded per wall-clock second, over the last RATE_WINDOW_S (1.0 = real time)."""
    ingest: dict[str, Any] = field(default_factory=dict)
    """ingest.StreamStats as a dict: dropped_frames, lag_s, fps_in, reconnects, ..."""
    memory: dict[str, Any] | None = None
    """MemoryStream.stats() after the newest patch or answer."""
    error: str | None = None
    """Why encoding stopped (model failure, memory settings); None while healthy."""
    busy: bool = False
    """The worker thread is still running (patches may still be queued after decoding ended)."""
    duration_s: float | None = None
    """Length of the file being encoded, as its probe read it; None for live sources."""


def source_duration(stream: Any) -> float | None:
    """A file stream's length from its source's probe (ingest's FileSource.info); None for live sources."""
    return getattr(getattr(getattr(stream, "source", None), "info", None), "duration_s", None)


class FrameSink(Protocol):
    """Where a worker puts one frame per patch before encoding it (the UI's evidence thumbnails)."""

    def add(self, t: float, frame: np.ndarray) -> None: ...


@dataclass(frozen=True)
class Resume:
    """Where a memory restored from its journal ends, so that a reopened source continues it
    (`longwatch serve` with serve.memory_dir, after a restart or a worker crash)."""

    t_last: float
    """End of the newest patch in the restored memory, stream seconds."""
    patches: int
    """Patches the restored memory holds."""
    epoch0: float | None = None
    """Wall-clock time (Unix seconds) of stream time 0 for a live source; None when unknown."""

    def continued(self, patch: TemporalPatch, live: bool, shift: float | None) -> tuple[TemporalPatch | None, float | None]:
        """`patch` of the reopened source on the old timeline, and the shift to keep using (None: not fixed yet).
        `live`: a source without a length (a camera); a file played at its own pace is still a file.

        A file starts again at 0: what the memory already holds is skipped (None), the rest keeps its
        times. A live source starts again at 0 too, but its frames are new: they are moved to the wall-clock
        time since the stream began (epoch0), never before t_last, and the crash shows as a gap."""
        if not live:
            return (None if patch.t_end <= self.t_last + 1e-6 else patch), 0.0
        first = shift is None
        if shift is None:
            since = time.time() - self.epoch0 - (patch.t_end - patch.t_start) if self.epoch0 is not None else 0.0
            shift = max(self.t_last, since) - patch.t_start
        moved = dataclasses.replace(patch, pts=(patch.pts[0] + shift, patch.pts[1] + shift),
                                    t_start=patch.t_start + shift, t_end=patch.t_end + shift)
        if first and moved.t_start - self.t_last > 1e-6:
            moved = dataclasses.replace(moved, gap_before=moved.t_start - self.t_last)
        return moved, shift


PatchCallback = Callable[[TemporalPatch], None]
FailureCallback = Callable[[str], None]


class IngestWorker:
    """Reads `stream` on a daemon thread and encodes every patch into `memory`.

    With `encoder` (a memory.multistream.BatchEncoder shared by the streams of one backbone) each patch
    goes into that encoder's next batched forward; without, it is encoded alone. Either way the memory
    takes its own lock and then the model's (MemoryStream.ingest), so other streams' answers and this
    one's interleave with it forward by forward. A failure here stops this stream's ingest only; the
    error is kept (status(), `on_failure`) and nothing is raised. `on_patch` runs on the worker thread
    after each patch is in memory (gaps, watches); keep it short.
    """

    def __init__(self, kind: str, stream: Any, memory: Any, thumbs: FrameSink | None = None,
                 on_patch: PatchCallback | None = None, on_failure: FailureCallback | None = None,
                 encoder: Any | None = None, resume: Resume | None = None) -> None:
        """`resume`: `memory` was restored from its journal; the source is reopened and continues it."""
        self.kind, self.stream, self.memory, self.encoder = kind, stream, memory, encoder
        self.thumbs = thumbs
        self.on_patch, self.on_failure = on_patch, on_failure
        self.resume = resume
        self._shift: float | None = None
        self.patches = resume.patches if resume else 0
        self.t_last = resume.t_last if resume else 0.0
        self.error: str | None = None
        self._memory_stats: dict[str, Any] | None = None
        self._recent: deque[tuple[float, float]] = deque()  # (wall time, stream seconds encoded so far)
        self._encoded_s = 0.0
        self._done = False
        self._stop = threading.Event()
        self._state_lock = threading.Lock()
        self._progress = threading.Condition(self._state_lock)  # notified after each patch and at exit
        self._thread = threading.Thread(target=self._run, name=f"ingest-worker {kind}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t = 0.0
        try:
            while not self._stop.is_set():
                try:
                    patch = self.stream.get(timeout=0.25)
                except (StopIteration, IngestError):  # ended or failed: the stream's state says which
                    return
                if patch is not None and self.resume is not None:
                    patch, self._shift = self.resume.continued(patch, source_duration(self.stream) is None, self._shift)
                if patch is None:
                    continue
                t = patch.t_start
                if self.thumbs is not None:
                    self.thumbs.add(patch.t_start, patch.frames[0])
                if self._stop.is_set():
                    return
                if self.encoder is not None:
                    self.encoder.submit(self.memory, patch)
                else:
                    self.memory.ingest(patch)
                stats = self.memory.stats()
                with self._state_lock:
                    self.patches += 1
                    self.t_last = max(self.t_last, patch.t_end)
                    self._memory_stats = stats
                    self._encoded_s += patch.t_end - patch.t_start
                    now = time.monotonic()
                    self._recent.append((now, self._encoded_s))
                    while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
                        self._recent.popleft()
                    self._progress.notify_all()
                if self.on_patch is not None:
                    self._notify(self.on_patch, patch)
        except ConfigError as e:
            self._fail(f"The memory settings do not fit this video: {e}")
        except Exception as e:  # the model or memory failed: this stream stops, the server goes on
            log.exception("ingest failed at %.1f s", t)
            self._fail(f"Model failure while encoding {format_clock(t)}: {type(e).__name__}: {e}")
        finally:
            with self._state_lock:
                self._done = True
                self._progress.notify_all()

    def _notify(self, callback: Callable[[Any], None], value: Any) -> None:
        try:
            callback(value)
        except Exception:  # a broken listener must not stop encoding
            log.exception("ingest worker callback failed")

    def _fail(self, message: str) -> None:
        with self._state_lock:
            self.error = message
        self.stream.close()
        if self.on_failure is not None:
            self._notify(self.on_failure, message)

    def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Block until `condition()` holds (checked after every patch) or the worker stops, at most `timeout`
        seconds; returns condition() at that moment. `condition` runs under the worker's state lock: read
        `patches` and `t_last` in it, call nothing that takes this worker's locks."""
        deadline = time.monotonic() + timeout
        with self._state_lock:
            while not condition() and not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._progress.wait(left)
            return condition()

    def note_memory(self, stats: dict[str, Any]) -> None:
        """Record a fresher MemoryStream.stats() (an answer's Answer.memory)."""
        with self._state_lock:
            self._memory_stats = stats

    def rate(self) -> float:
        with self._state_lock:
            if len(self._recent) < 2:
                return 0.0
            (w0, s0), (w1, s1) = self._recent[0], self._recent[-1]
        # idle since the last patch counts too: a stalled stream's rate falls towards 0
        span = max(w1 - w0, 1e-6) + max(0.0, time.monotonic() - w1 - 1.0)
        return (s1 - s0) / span

    def status(self) -> WorkerStatus:
        s = self.stream.state
        ingest = dataclasses.asdict(self.stream.stats())
        with self._state_lock:
            patches, t_last, error, memory = self.patches, self.t_last, self.error, self._memory_stats
        state = "failed" if error else s.state
        return WorkerStatus(kind=self.kind, source=s.source, state=state, attempt=s.attempt,
                            next_retry_s=s.next_retry_s, reason=error or s.reason, patches=patches,
                            t_last=t_last, rate=self.rate(), ingest=ingest, memory=memory, error=error,
                            busy=self.running, duration_s=source_duration(self.stream))

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop decoding and encoding; then free the memory (waits for an answer using it to end)."""
        self._stop.set()
        self.stream.close()
        self._thread.join(timeout)
        with self.memory.lock:  # an answer decoding in place on this memory ends first
            self.memory.close()
