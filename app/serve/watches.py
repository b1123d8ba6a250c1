"""Watches over HTTP: "tell me when" a yes/no condition turns true on a stream, as an SSE event and a webhook.

The firing logic is memory.watch.Watch (one yes_no forward at most once per interval_s of stream time,
fires on a rising edge, re-arms below threshold - hysteresis). This module owns the watches of every
stream and one checker thread. A stream's patch listener, on its ingest thread, only keeps the patch's
last frame and marks the stream pending; the checker then scores each due watch of that stream, so the
ingest thread never waits for a check (both take the model lock, one forward at a time). When the
checker falls behind it scores the newest patches once, never a backlog. A watch whose check fails is
logged, marked failed with the reason and checked no more; its stream and the other watches go on.

A firing is a `watch` event on the stream's bus: watch_id, condition, t, p_yes, fired, `evidence` (the
newest patch the model saw: block_id, t_start, t_end) and `frame` (that patch's last frame, a JPEG
data URI); the same JSON is POSTed to the watch's webhook, if any.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longwatch.app.serve.errors import APIError
from longwatch.app.serve.registry import Stream, StreamRegistry
from longwatch.app.serve.schemas import WatchInfo
from longwatch.app.serve.webhook import Webhooks
from longwatch.app.ui.thumbs import data_uri, encode_thumb
from longwatch.ingest import TemporalPatch
from longwatch.ingest.uri import redact
from longwatch.memory.engine import YesNo
from longwatch.memory.watch import Watch, WatchFired

log = logging.getLogger(__name__)
FRAMES_KEPT = 16
"""Last frames of the newest patches kept per watched stream, to show the one a firing saw."""
FRAME_WIDTH = 320
"""Largest width of the evidence JPEG (narrower frames keep their size)."""
FRAME_WAIT_S = 1.0
"""How long a firing waits for its patch's frame (the listener runs just after the patch is encoded)."""


@dataclass(frozen=True)
class Frame:
    t_start: float
    t_end: float
    t: float
    """Presentation time of this frame: the patch's last."""
    image: np.ndarray


def frame_of(patch: TemporalPatch) -> Frame:
    return Frame(patch.t_start, patch.t_end, float(patch.pts[1]), patch.frames[-1].copy())


def frame_json(frame: Frame) -> dict[str, Any]:
    jpeg = encode_thumb(frame.image, min(FRAME_WIDTH, frame.image.shape[1]))
    return {"t": round(frame.t, 3), "t_start": round(frame.t_start, 3), "t_end": round(frame.t_end, 3),
            "image_url": data_uri(jpeg)}


def nearest(frames: deque[Frame], t_end: float) -> Frame | None:
    return min(frames, key=lambda f: abs(f.t_end - t_end), default=None)


class ServedWatch:
    """One watch of one stream as the API shows it: the Watch's firing state, its failure and webhook counts.

    The checker thread calls due/observe/fail, webhook threads note_webhook, request threads info(); one lock.
    """

    def __init__(self, stream_id: str, watch: Watch, webhook: str | None, watch_id: str | None = None) -> None:
        self.id = watch_id or f"watch-{secrets.token_hex(6)}"
        self.stream_id, self.watch, self.webhook = stream_id, watch, webhook
        self.created = int(time.time())
        self.failed: str | None = None
        self.checked_at: float | None = None
        self.fired_t: float | None = None
        self.sent = self.send_failures = 0
        self.send_error: str | None = None
        self._lock = threading.Lock()

    @property
    def condition(self) -> str:
        return self.watch.condition

    @property
    def fired(self) -> int:
        with self._lock:
            return self.watch.fired

    def due(self, t_last: float) -> bool:
        with self._lock:
            return self.failed is None and self.watch.due(t_last)

    def observe(self, score: YesNo) -> WatchFired | None:
        with self._lock:
            fired = self.watch.observe(score)
            self.checked_at = time.time()
            if fired is not None:
                self.fired_t = fired.t
            return fired

    def fail(self, reason: str) -> None:
        with self._lock:
            self.failed = reason

    def note_webhook(self, error: str | None) -> None:
        with self._lock:
            if error is None:
                self.sent += 1
            else:
                self.send_failures += 1
                self.send_error = error

    def info(self) -> WatchInfo:
        with self._lock:
            w, last = self.watch, self.watch.last
            return WatchInfo(
                id=self.id, created=self.created, stream_id=self.stream_id, condition=w.condition,
                interval_s=w.interval_s, threshold=w.threshold, hysteresis=w.hysteresis,
                webhook=redact(self.webhook) if self.webhook else None,
                state="failed" if self.failed else "active", reason=self.failed, checks=w.checks, fired=w.fired,
                last_p_yes=None if last is None else round(last.p_yes, 6),
                last_checked_t=None if last is None else round(last.t, 3),
                last_checked_at=None if self.checked_at is None else round(self.checked_at, 3),
                last_fired_t=None if self.fired_t is None else round(self.fired_t, 3),
                webhook_sent=self.sent, webhook_failures=self.send_failures, webhook_error=self.send_error)


@dataclass
class Watched:
    """A stream that has watches: them, in creation order, and its newest patches' last frames."""

    stream: Stream
    watches: dict[str, ServedWatch] = field(default_factory=dict)
    frames: deque[Frame] = field(default_factory=lambda: deque(maxlen=FRAMES_KEPT))


class WatchManager:
    """Every stream's watches, at most `max_per_stream` each, checked on one thread (see the module docstring)."""

    def __init__(self, max_per_stream: int, webhooks: Webhooks) -> None:
        self.max_per_stream, self.webhooks = max_per_stream, webhooks
        self._watched: dict[str, Watched] = {}
        self._pending: dict[str, Stream] = {}  # streams with patches not checked yet, oldest first
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def attach(self, registry: StreamRegistry) -> None:
        """Listen to every stream the registry makes from now on; forget a stream's watches when it goes."""
        registry.subscribe(on_added=self.added, on_removed=self.removed)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="serve-watches", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(10)
        self.webhooks.close()

    def added(self, stream: Stream) -> None:
        stream.add_patch_listener(self.on_patch)

    def removed(self, stream: Stream) -> None:
        with self._cv:
            self._watched.pop(stream.id, None)
            self._pending.pop(stream.id, None)

    # ---- the API's operations -------------------------------------------------------------------

    def create(self, stream: Stream, watch: Watch, webhook: str | None, watch_id: str | None = None) -> ServedWatch:
        """A new watch on `stream`, checked from its next patch on; APIError 429 beyond max_per_stream.
        `watch_id`: a watch the manifest lists, reopened with its stream (serve.memory_dir)."""
        served = ServedWatch(stream.id, watch, webhook, watch_id)
        with self._cv:
            if stream.closing.is_set():
                raise APIError(404, f"no stream {stream.id!r} (it was just deleted)", "stream_not_found", "stream_id")
            watched = self._watched.setdefault(stream.id, Watched(stream))
            if len(watched.watches) >= self.max_per_stream:
                raise APIError(429, f"the stream has {len(watched.watches)} watches, the server's maximum per "
                               "stream (serve.max_watches, --max-watches); delete one first", "watch_limit_reached",
                               "condition")
            watched.watches[served.id] = served
        log.info("watch %s on %s: %r every %g s", served.id, stream.id, watch.condition, watch.interval_s)
        return served

    def list(self, stream_id: str) -> list[ServedWatch]:
        with self._cv:
            watched = self._watched.get(stream_id)
            return list(watched.watches.values()) if watched else []

    def get(self, stream_id: str, watch_id: str) -> ServedWatch:
        with self._cv:
            watched = self._watched.get(stream_id)
            served = watched.watches.get(watch_id) if watched else None
        if served is None:
            raise APIError(404, f"no watch {watch_id!r} on stream {stream_id!r} (GET /v1/streams/{stream_id}/watches "
                           "lists them)", "watch_not_found", "watch_id")
        return served

    def delete(self, stream_id: str, watch_id: str) -> None:
        """The watch is checked no more (a check already running finishes, and may still fire once)."""
        self.get(stream_id, watch_id)
        with self._cv:
            watched = self._watched.get(stream_id)
            if watched is not None:
                watched.watches.pop(watch_id, None)

    # ---- checking -------------------------------------------------------------------------------

    def on_patch(self, stream: Stream, patch: TemporalPatch) -> None:
        """Patch listener (ingest thread): keep the frame, mark the stream pending; nothing slow."""
        with self._cv:
            if not (watched := self._watched.get(stream.id)) or not watched.watches:
                return
        frame = frame_of(patch)
        with self._cv:
            watched.frames.append(frame)
            self._pending[stream.id] = stream
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                batch, self._pending = list(self._pending.values()), {}
            for stream in batch:
                try:
                    self.check_stream(stream)
                except Exception:  # the checker must outlive one bad stream
                    log.exception("checking the watches of %s failed", stream.id)

    def check_stream(self, stream: Stream) -> None:
        """Score every due watch of `stream` once on its newest patches; fire those that turned true."""
        memory = stream.worker.memory
        for served in self.list(stream.id):
            if stream.closing.is_set():
                return
            try:
                if not served.due(memory.stats()["t_last"]):
                    continue
                fired = served.observe(memory.yes_no(served.condition))
            except Exception as e:
                if stream.closing.is_set():  # freed under the check: not the watch's fault
                    return
                log.exception("watch %s on %s failed", served.id, stream.id)
                served.fail(f"{type(e).__name__}: {e}")
                continue
            if fired is not None:
                self.fire(stream, served, fired)

    def fire(self, stream: Stream, served: ServedWatch, fired: WatchFired) -> None:
        ev = fired.evidence
        frame = self._frame(stream.id, ev.t_end)
        event = stream.bus.publish(
            "watch", watch_id=served.id, condition=fired.condition, t=round(fired.t, 3), p_yes=round(fired.p_yes, 6),
            fired=served.fired, evidence={"block_id": ev.block_id, "t_start": round(ev.t_start, 3),
                                                 "t_end": round(ev.t_end, 3), "reason": ev.reason},
            frame=frame_json(frame) if frame is not None else None)
        log.info("watch %s on %s fired at %.2f s (P(yes) %.3f)", served.id, stream.id, fired.t, fired.p_yes)
        if event is not None and served.webhook:
            self.webhooks.send(served.webhook, event.as_dict(), served.note_webhook)

    def _frame(self, stream_id: str, t_end: float) -> Frame | None:
        """The kept frame of the patch ending at `t_end` (waiting briefly for its listener), else the nearest."""
        def arrived() -> bool:
            watched = self._watched.get(stream_id)
            return watched is None or any(f.t_end >= t_end - 1e-6 for f in watched.frames)

        with self._cv:
            self._cv.wait_for(arrived, FRAME_WAIT_S)
            watched = self._watched.get(stream_id)
            return nearest(watched.frames, t_end) if watched else None
