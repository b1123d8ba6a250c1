"""PatchStream: decode on a thread, hand temporal patches to the consumer through a bounded queue, reconnect.

`open_source` and `open_stream` (at the end) open a source by name and stream its temporal patches: the
entry points for the app and the memory layer.

Threads: a supervisor runs the state machine (connecting -> streaming -> reconnecting -> ... ->
ended | failed); each connection is read by a worker thread that samples, resizes, pairs and queues
frames. For sources that can block (network, webcam) the supervisor is a watchdog: a worker without
a frame for longer than the open or read timeout (+ grace) is abandoned (its generation number
goes stale, so anything it still produces is ignored) and the source reconnects. No blocking read
can hang the consumer or close().
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from longwatch.ingest.config import IngestConfig
from longwatch.ingest.errors import IngestError
from longwatch.ingest.network import NetworkSource
from longwatch.ingest.patches import (BoundedBuffer, Closed, PatchBuilder, SourceState, TemporalPatch, TimestampSampler,
                                     choose_frame_size)
from longwatch.ingest.sources import FileSource, Source, WebcamSource
from longwatch.ingest.uri import parse_source, scrub

log = logging.getLogger(__name__)

StateCallback = Callable[[SourceState], None]
_Item = tuple[np.ndarray, tuple[float, float]]
# Beyond PyAV's own timeouts, so the watchdog only fires when those did not.
WATCHDOG_GRACE_S = 2.0


@dataclass(frozen=True)
class StreamStats:
    """A snapshot of a PatchStream's counters."""

    patches: int
    """Temporal patches handed to the consumer."""
    frames_seen: int
    """Frames the source offered to the sampler."""
    frames_sampled: int
    """Frames kept by the sampler (target fps)."""
    dropped_frames: int
    """Sampled frames dropped because the consumer fell behind a live source (2 per dropped patch)."""
    queued_patches: int
    lag_s: float
    """Newest decoded time minus the end of the last patch delivered: how far the consumer trails the live edge."""
    fps_in: float
    """Frames seen per wall-clock second since the first frame."""
    fps_out: float
    """Sampled frames delivered per wall-clock second since the first frame."""
    reconnects: int
    gaps: int
    gap_s: float
    """Total stream time missing between delivered patches (reconnects and drops)."""
    decode_errors: int


class _Abandoned(Exception):
    """Raised inside a worker whose connection was given up by the watchdog or close()."""


class PatchStream:
    """Iterator of TemporalPatch from one Source, thread-safe, with observable state.

    Files wait for the consumer when the queue is full; live sources (and realtime files) drop the
    oldest queued patch instead, counting its frames in stats().dropped_frames. Iteration stops when
    the source ends; it raises IngestError when the source failed. State callbacks run on an ingest
    thread, in order; keep them short.
    """

    def __init__(self, source: Source, cfg: IngestConfig, on_state: StateCallback | None = None) -> None:
        self.source, self.cfg = source, cfg
        self._buffer: BoundedBuffer[_Item] = BoundedBuffer(max(1, cfg.queue_frames // 2))
        self._sampler = TimestampSampler(cfg.fps)
        frames = source.frames_at(cfg.fps)  # a file's frame count: total_pixels spreads over it
        self._builder = PatchBuilder(cfg.frame_size, lambda h, w: choose_frame_size(h, w, cfg, frames))
        self._lock = threading.Lock()  # generation, sampler, builder, counters
        self._state_lock = threading.RLock()  # state changes and callbacks, in order
        self._listeners: list[StateCallback] = [on_state] if on_state else []
        self._state = SourceState("connecting", source.name, at=time.time())
        self._closed = threading.Event()
        self._gen = 0
        self._got_frame = False
        self._progress = time.monotonic()
        self._first_wall: float | None = None
        self._seen = self._sampled = self._dropped = self._patches = 0
        self._reconnects = self._gaps = 0
        self._gap_s = 0.0
        self._edge = 0.0
        self._first_kept: float | None = None
        self._last_end: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"ingest {source.name}", daemon=True)
        self._thread.start()

    # ---- consumer side -------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> TemporalPatch | None:
        """The next patch, or None if `timeout` seconds pass first.

        Raises StopIteration once the source has ended (or after close()), IngestError if it failed.
        """
        if self._closed.is_set():
            raise StopIteration
        try:
            item = self._buffer.get(timeout)
        except Closed:
            state = self.state
            if state.state == "failed":
                raise IngestError(state.reason or f"{self.source.name}: failed",
                                  code=state.extra.get("code", "error")) from None
            raise StopIteration from None
        return None if item is None else self._patch(item)

    def __iter__(self) -> PatchStream:
        return self

    def __next__(self) -> TemporalPatch:
        while True:
            patch = self.get(timeout=0.5)
            if patch is not None:
                return patch

    @property
    def state(self) -> SourceState:
        with self._state_lock:
            return self._state

    def add_listener(self, callback: StateCallback) -> None:
        """Call `callback(SourceState)` on every later state change."""
        with self._state_lock:
            self._listeners.append(callback)

    def stats(self) -> StreamStats:
        with self._lock:
            elapsed = time.monotonic() - self._first_wall if self._first_wall else 0.0
            lag = max(0.0, self._edge - self._last_end) if self._last_end is not None else 0.0
            return StreamStats(
                patches=self._patches, frames_seen=self._seen, frames_sampled=self._sampled,
                dropped_frames=self._dropped, queued_patches=len(self._buffer), lag_s=lag,
                fps_in=self._seen / elapsed if elapsed > 0 else 0.0,
                fps_out=2 * self._patches / elapsed if elapsed > 0 else 0.0,
                reconnects=self._reconnects, gaps=self._gaps, gap_s=self._gap_s,
                decode_errors=self.source.decode_errors)

    def close(self, timeout: float = 2.0) -> None:
        """Stop decoding and free the queue; returns within `timeout` even if a read is blocked."""
        self._closed.set()
        with self._lock:
            self._gen += 1
        self._buffer.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> PatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _patch(self, item: _Item) -> TemporalPatch:
        frames, pts = item
        period = 1.0 / self.cfg.fps
        with self._lock:
            gap = 0.0
            # live: stream time missing since the last delivered patch (or since the first sampled frame)
            previous = self._last_end if self._last_end is not None else self._first_kept
            if self.source.live and previous is not None and pts[0] - previous >= 0.99 * period:
                gap = pts[0] - previous
                self._gaps += 1
                self._gap_s += gap
            patch = TemporalPatch(index=self._patches, frames=frames, pts=pts, t_start=pts[0],
                                  t_end=pts[1] + period, gap_before=gap)
            self._patches += 1
            self._last_end = patch.t_end
        return patch

    # ---- ingest side ---------------------------------------------------------------------------

    def _set_state(self, state: str, gen: int | None = None, **fields: object) -> None:
        with self._state_lock:
            if gen is not None and gen != self._gen:
                return
            self._state = SourceState(state, self.source.name, at=time.time(), **fields)  # type: ignore[arg-type]
            log.info("%s: %s %s", self.source.name, state, fields or "")
            for callback in list(self._listeners):
                try:
                    callback(self._state)
                except Exception:  # a broken listener must not stop ingest
                    log.exception("state callback failed")

    def _run(self) -> None:
        cfg, attempt, streamed, reason = self.cfg, 0, False, None
        try:
            while not self._closed.is_set():
                self._set_state("connecting", attempt=attempt, reason=reason,
                                extra={"live": self.source.live})
                kind, reason, code, got = self._session()
                if self._closed.is_set():
                    break
                if got:
                    streamed, attempt = True, 0
                if kind == "eof" and not self.source.reconnects:
                    self._flush()
                    self._set_state("ended", reason=self.source.note, extra={"patches": self._patches_made()})
                    return
                if not (self.source.reconnects and streamed):
                    if kind == "eof":
                        reason, code = f"{self.source.name}: stream ended before its first frame", "no_frames"
                    self._set_state("failed", reason=reason, extra={"code": code})
                    return
                attempt += 1
                if cfg.reconnect_attempts and attempt > cfg.reconnect_attempts:
                    self._set_state("failed", reason=f"gave up after {cfg.reconnect_attempts} reconnect attempts: "
                                    f"{reason or 'stream ended'}", extra={"code": "gave_up"})
                    return
                delay = min(cfg.reconnect_initial_s * 2 ** (attempt - 1), cfg.reconnect_max_s)
                reason = reason or f"{self.source.name}: stream ended"
                with self._lock:
                    self._reconnects += 1
                    self._builder.drop_held()  # no patch spans the gap
                self._set_state("reconnecting", attempt=attempt, next_retry_s=delay, reason=reason)
                if self._closed.wait(delay):
                    break
            self._set_state("ended", reason="closed", extra={"patches": self._patches_made()})
        except Exception as e:  # a bug must end the stream visibly, not kill a thread silently
            log.error("ingest thread crashed\n%s", scrub("".join(traceback.format_exception(e))))
            self._set_state("failed", reason=scrub(f"internal error: {type(e).__name__}: {e}"),
                            extra={"code": "internal"})
        finally:
            self._buffer.close()

    def _patches_made(self) -> int:
        with self._lock:
            return self._patches + len(self._buffer)

    def _session(self) -> tuple[str, str | None, str | None, bool]:
        """One connection on a worker thread, watched. Returns (eof|error|closed, reason, code, got frames)."""
        with self._lock:
            self._gen += 1
            gen = self._gen
            self._got_frame = False
            self._progress = time.monotonic()
        result: dict[str, str | None] = {"kind": "eof", "reason": None, "code": None}
        worker = threading.Thread(target=self._work, args=(gen, result), daemon=True,
                                  name=f"ingest-read {self.source.name}")
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            if self._closed.is_set():
                return "closed", None, None, self._got_frame
            with self._lock:
                got, idle = self._got_frame, time.monotonic() - self._progress
            limit = (self.cfg.read_timeout_s if got else self.cfg.open_timeout_s) + WATCHDOG_GRACE_S
            if self.source.watchdog and worker.is_alive() and idle > limit:
                with self._lock:
                    self._gen += 1  # abandon the blocked read; it exits on its own if it ever returns
                log.warning("%s: read blocked for %.1f s; abandoned by the watchdog", self.source.name, idle)
                what = "no frame" if got else "could not open"
                return "error", f"{self.source.name}: {what} within {limit - WATCHDOG_GRACE_S:g} s", "timeout", got
        return result["kind"] or "eof", result["reason"], result["code"], self._got_frame

    def _work(self, gen: int, result: dict[str, str | None]) -> None:
        frames = self.source.read(lambda t: self._select(gen, t))
        try:
            for frame, t in frames:
                if not self._deliver(gen, frame, t):
                    return
        except _Abandoned:
            return
        except IngestError as e:
            result.update(kind="error", reason=str(e), code=e.code)
        except Exception as e:  # decoder bugs, out of memory on a huge frame: fail this connection visibly
            log.error("%s: read failed\n%s", self.source.name, scrub("".join(traceback.format_exception(e))))
            result.update(kind="error", reason=scrub(f"{self.source.name}: {type(e).__name__}: {e}"),
                          code="internal")
        finally:
            try:
                frames.close()
            except Exception:  # closing after an abandoned read can fail; nothing is waiting on it
                log.debug("closing %s failed", self.source.name, exc_info=True)

    def _select(self, gen: int, t: float) -> bool:
        with self._lock:
            if gen != self._gen:
                raise _Abandoned
            self._progress = time.monotonic()
            self._seen += 1
            self._edge = max(self._edge, t)
            first = not self._got_frame
            self._got_frame = True
            if self._first_wall is None:
                self._first_wall = self._progress
            keep = self._sampler(t)
            if keep and self._first_kept is None:
                self._first_kept = t
        if first:
            self._set_state("streaming", gen=gen, extra={"live": self.source.live})
        return keep

    def _deliver(self, gen: int, frame: np.ndarray, t: float) -> bool:
        """Resize, pair and queue one kept frame; False when this worker should stop."""
        with self._lock:
            if gen != self._gen:
                return False
            self._sampled += 1
            pair = self._builder.add(frame, t)
        if pair is None:
            return True
        if self.source.live:
            dropped = self._buffer.put_drop_oldest(pair)
            if dropped:
                with self._lock:
                    self._dropped += 2 * len(dropped)
            return True
        while not self._buffer.put(pair, timeout=0.25):  # files wait for the consumer
            with self._lock:
                if gen != self._gen:
                    return False
                self._progress = time.monotonic()
        return not self._closed.is_set()

    def _flush(self) -> None:
        with self._lock:
            pair = self._builder.flush()
        if pair is not None:
            self._buffer.put(pair)


def open_source(source: str | int, cfg: IngestConfig | None = None) -> Source:
    """A Source for a file path, a webcam index (0, /dev/video0) or a URL (rtsp, rtmp, http(s), HLS).

    Files are probed here, so a bad file raises IngestError at once; network sources connect lazily,
    on PatchStream's thread, and report problems through its state.
    """
    cfg = cfg or IngestConfig()
    spec = parse_source(source)
    if spec.kind == "file":
        return FileSource(str(spec.target), cfg)
    if spec.kind == "webcam":
        return WebcamSource(spec.target, cfg)
    return NetworkSource(str(spec.target), spec.scheme, cfg)


def open_stream(source: str | int, cfg: IngestConfig | None = None,
                on_state: StateCallback | None = None) -> PatchStream:
    """Start decoding `source` into TemporalPatches on a background thread (see PatchStream)."""
    cfg = cfg or IngestConfig()
    return PatchStream(open_source(source, cfg), cfg, on_state)
