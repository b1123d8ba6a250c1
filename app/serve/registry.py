"""Streams as resources: each a source feeding its own MemoryStream on an IngestWorker, with an event bus;
the registry holds them, bounds how many, frees idle chat videos and tells listeners (watches) of changes.

One Backbone serves every stream (its lock orders model calls). A stream's failure, deletion or bad
settings never touch another stream: each owns its decoder thread, its memory and its bus.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from longwatch.app.schema import ConfigError
from longwatch.app.serve.errors import APIError
from longwatch.app.serve.events import TERMINAL, EventBus
from longwatch.app.serve.manifest import Entry, Manifest
from longwatch.app.serve.schemas import StreamInfo
from longwatch.app.serve.specs import StreamSpec
from longwatch.app.worker import IngestWorker, Resume
from longwatch.ingest import IngestError, SourceState, TemporalPatch, open_stream
from longwatch.ingest.uri import scrub
from longwatch.memory.multistream import BatchEncoder
from longwatch.memory.stream import MemoryStream

log = logging.getLogger(__name__)
Clock = Callable[[], float]
StreamListener = Callable[["Stream"], None]
PatchListener = Callable[["Stream", TemporalPatch], None]


class Stream:
    """One source -> one memory. `bus` carries its events; `use()` marks it busy so it is never freed mid-answer."""

    def __init__(self, stream_id: str, spec: StreamSpec, backbone: Any, clock: Clock = time.monotonic,
                 encoder: Any | None = None, memory_dir: str | None = None, restore: Entry | None = None) -> None:
        """`memory_dir`: the memory journals there (serve.memory_dir); `restore`: it was journaled before (a
        restarted server reopens it) and the source continues it."""
        self.id, self.spec, self.bb, self.clock = stream_id, spec, backbone, clock
        self.created = restore.created if restore else int(time.time())
        self.last_used = clock()
        self.closing = threading.Event()
        self.bus = EventBus(stream_id)
        self._patch_listeners: list[PatchListener] = []
        self._users = 0
        self._lock = threading.Lock()
        try:
            memory = MemoryStream(backbone, spec.memory, stream_id=stream_id, memory_dir=memory_dir)
        except (ConfigError, ValueError) as e:
            raise APIError(400, f"the memory settings cannot work: {e}", "invalid_memory") from None
        resume = None
        if restore is not None:
            held = [b for b in memory.blocks.values() if b.kind == "patch"]
            t_last = max((b.t_end for b in held), default=0.0)
            resume = Resume(t_last, len(held), restore.epoch0)
            self.bus.publish("restored", patches=len(held), encoded_up_to=round(t_last, 3))
        try:
            source = open_stream(spec.source, spec.ingest, on_state=self._on_state)
        except IngestError as e:
            memory.close()
            raise APIError(400, f"cannot open the video: {scrub(str(e), spec.source)}", "invalid_video") from None
        kind = "url" if "://" in spec.source else "file"
        self.worker = IngestWorker(kind, source, memory, on_patch=self._on_patch, on_failure=self._on_failure,
                                   encoder=encoder, resume=resume)

    # ---- events ---------------------------------------------------------------------------------

    def _on_state(self, state: SourceState) -> None:
        data = {"attempt": state.attempt, "next_retry_s": state.next_retry_s,
                "reason": scrub(state.reason, self.spec.source) if state.reason else None}
        self.bus.publish(state.state, **{k: v for k, v in data.items() if v is not None})
        if state.state in TERMINAL:
            self.bus.close()

    def _on_patch(self, patch: TemporalPatch) -> None:
        if patch.gap_before > 0:
            self.bus.publish("gap", t_start=round(patch.t_start, 3), gap_s=round(patch.gap_before, 3))
        for listener in list(self._patch_listeners):
            listener(self, patch)

    def _on_failure(self, message: str) -> None:
        self.bus.publish("failed", reason=message)
        self.bus.close()

    def add_patch_listener(self, listener: PatchListener) -> None:
        """Call `listener(stream, patch)` on the ingest thread after each patch is in memory (watches)."""
        self._patch_listeners.append(listener)

    # ---- use ------------------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """Known once the source is open (an http URL with a duration is a file)."""
        return bool(self.worker.stream.source.live)

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            self.last_used = self.clock()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            self.last_used = self.clock()

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._users == 0

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self._users else self.clock() - self.last_used

    def info(self) -> StreamInfo:
        s = self.worker.status()
        ing = s.ingest
        return StreamInfo(
            id=self.id, created=self.created, name=self.spec.name, origin=self.spec.origin,  # type: ignore[arg-type]
            source=self.spec.display, live=self.live, state=s.state, reason=s.reason, attempt=s.attempt,
            next_retry_s=s.next_retry_s, policy=self.spec.memory.policy, fps=self.spec.ingest.fps,
            frame_size=str(self.spec.ingest.frame_size), patches=s.patches, encoded_up_to=round(s.t_last, 3),
            lag_s=round(float(ing.get("lag_s", 0.0)), 3), dropped_frames=int(ing.get("dropped_frames", 0)),
            gaps=int(ing.get("gaps", 0)), gap_s=round(float(ing.get("gap_s", 0.0)), 3),
            reconnects=int(ing.get("reconnects", 0)), rate=round(s.rate, 3),
            memory=(s.memory or {}).get("tiers"))

    def close(self) -> None:
        """Stop decoding and free the memory (waits for an answer using it); subscribers get `ended`."""
        self.closing.set()
        self.bus.publish("ended", reason="deleted")
        self.bus.close()
        self.worker.close()


class StreamRegistry:
    """Streams by id, at most serve.max_streams. Chat videos are also found by their key and freed when idle
    (the least recently used idle one first when the registry is full); API streams only by DELETE."""

    def __init__(self, backbone: Any, max_streams: int, video_idle_s: float, clock: Clock = time.monotonic,
                 batch: bool = True, manifest: Manifest | None = None) -> None:
        """`batch`: every stream's patches go through one shared BatchEncoder (batched forwards). `manifest`
        (serve.memory_dir): API streams journal their memory and are listed there; `restore()` reopens them."""
        self.bb, self.max_streams, self.video_idle_s, self.clock = backbone, max_streams, video_idle_s, clock
        self.manifest = manifest
        self._unstarted: set[str] = set()  # API streams whose first patch's wall-clock time is not recorded yet
        self.encoder = BatchEncoder(name="serve-encoder") if batch else None
        self._streams: dict[str, Stream] = {}
        self._keys: dict[str, str] = {}  # chat video key -> stream id
        self._lock = threading.Lock()
        self._added: list[StreamListener] = []
        self._removed: list[StreamListener] = []
        self._stop = threading.Event()

    def subscribe(self, on_added: StreamListener | None = None, on_removed: StreamListener | None = None) -> None:
        """Call `on_added(stream)` for every stream made from now on and `on_removed(stream)` before one is freed."""
        if on_added:
            self._added.append(on_added)
        if on_removed:
            self._removed.append(on_removed)

    def _make_room(self) -> list[Stream]:
        """Under the lock: take out idle chat videos until one more fits; APIError 429 when none can go."""
        victims: list[Stream] = []
        while len(self._streams) >= self.max_streams:
            idle = [s for s in self._streams.values() if s.spec.origin == "chat" and s.idle]
            if not idle:
                raise APIError(429, f"the server holds {self.max_streams} streams, its maximum (serve.max_streams); "
                               "delete one (DELETE /v1/streams/ID) or try later", "capacity_reached")
            victim = max(idle, key=lambda s: s.idle_for())
            victims.append(self._take(victim.id))
        return victims

    def _take(self, stream_id: str) -> Stream:
        stream = self._streams.pop(stream_id)
        if stream.spec.key is not None and self._keys.get(stream.spec.key) == stream_id:
            del self._keys[stream.spec.key]
        return stream

    def _new(self, spec: StreamSpec, victims: list[Stream], restore: Entry | None = None) -> Stream:
        """Under the lock: room made (the streams taken out go to `victims`, to be closed outside), then a stream."""
        victims += self._make_room()
        stream_id = restore.id if restore else f"stream-{secrets.token_hex(6)}"
        manifest = self.manifest if spec.origin == "api" else None  # chat videos are not journaled
        memory_dir = manifest.memory_dir(stream_id) if manifest else None
        stream = Stream(stream_id, spec, self.bb, self.clock, self.encoder, memory_dir, restore)
        if manifest is not None:
            if restore is None:
                manifest.add(stream.id, spec, stream.created)
            if restore is None or restore.epoch0 is None:
                self._unstarted.add(stream.id)
                stream.add_patch_listener(self._started)
        self._streams[stream.id] = stream
        if spec.key is not None:
            self._keys[spec.key] = stream.id
        return stream

    def create(self, spec: StreamSpec) -> Stream:
        """Start a stream; APIError 429 when full, 400 when the source or the settings cannot work."""
        victims: list[Stream] = []
        try:
            with self._lock:
                stream = self._new(spec, victims)
        finally:
            self._finish(victims, [])
        self._finish([], [stream])
        return stream

    def video(self, spec: StreamSpec) -> tuple[Stream, bool]:
        """The chat video named by spec.key, acquired (release() it after the answer), and whether it is new.

        A video whose source failed before any patch is started again: the next request retries it.
        """
        if spec.key is None:
            raise ValueError("a chat video needs a key")
        victims: list[Stream] = []
        try:
            with self._lock:
                known = self._streams.get(self._keys.get(spec.key, ""))
                if known is not None and known.worker.patches == 0 and known.info().state == "failed":
                    victims.append(self._take(known.id))
                    known = None
                created = known is None
                if known is None:
                    known = self._new(spec, victims)
                known.acquire()
        finally:
            self._finish(victims, [])
        if created:
            self._finish([], [known])
        return known, created

    def _started(self, stream: Stream, patch: TemporalPatch) -> None:
        """First patch of a journaled stream: record the wall-clock time of its stream time 0."""
        with self._lock:
            first = stream.id in self._unstarted
            self._unstarted.discard(stream.id)
        if first and self.manifest is not None and not stream.closing.is_set():
            self.manifest.started(stream.id, time.time() - patch.t_end)

    def restore(self) -> list[tuple[Stream, Entry]]:
        """Reopen every stream the manifest lists (memory from its journal, source reconnected); a stream that
        cannot be reopened is logged and stays listed (a later start tries again)."""
        if self.manifest is None:
            return []
        out = []
        for entry in self.manifest.compact():
            try:
                with self._lock:
                    stream = self._new(entry.spec, [], restore=entry)
            except APIError as e:
                log.warning("stream %s (%s) not reopened: %s", entry.id, entry.spec.display, e.message)
                continue
            log.info("stream %s reopened: %d patches up to %.1f s from its journal", stream.id,
                     stream.worker.patches, stream.worker.t_last)
            self._finish([], [stream])
            out.append((stream, entry))
        return out

    def find_video(self, key: str) -> Stream | None:
        """The chat video known by `key`, acquired; None when there is none."""
        with self._lock:
            known = self._streams.get(self._keys.get(key, ""))
            if known is not None:
                known.acquire()
            return known

    def _finish(self, removed: list[Stream], added: list[Stream]) -> None:
        for stream in removed:
            self._notify(self._removed, stream)
            stream.close()
            log.info("stream %s freed", stream.id)
        for stream in added:
            log.info("stream %s started: %s (%s)", stream.id, stream.spec.display, stream.spec.origin)
            self._notify(self._added, stream)

    def _notify(self, listeners: list[StreamListener], stream: Stream) -> None:
        for listener in list(listeners):
            try:
                listener(stream)
            except Exception:  # a broken listener must not break the registry
                log.exception("stream listener failed")

    def get(self, stream_id: str, param: str = "stream_id", acquire: bool = False) -> Stream:
        """The stream `stream_id` (acquired when asked: it cannot be freed as idle until released); 404 if none."""
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is not None and acquire:
                stream.acquire()
        if stream is None:
            raise APIError(404, f"no stream {stream_id!r} (GET /v1/streams lists them)", "stream_not_found", param)
        return stream

    def list(self) -> list[Stream]:
        with self._lock:
            return sorted(self._streams.values(), key=lambda s: (s.created, s.id))

    def delete(self, stream_id: str) -> None:
        """Free the stream's decoder and memory; APIError 404 when unknown."""
        with self._lock:
            if stream_id not in self._streams:
                raise APIError(404, f"no stream {stream_id!r}", "stream_not_found")
            stream = self._take(stream_id)
        self._finish([stream], [])
        if self.manifest is not None and stream.spec.origin == "api":
            self.manifest.remove(stream_id)

    def reap(self) -> list[str]:
        """Free every chat video idle for longer than video_idle_s; returns their ids."""
        with self._lock:
            old = [self._take(s.id) for s in list(self._streams.values())
                   if s.spec.origin == "chat" and s.idle_for() > self.video_idle_s]
        self._finish(old, [])
        return [s.id for s in old]

    def start_reaper(self) -> None:
        interval = max(1.0, min(30.0, self.video_idle_s / 4))

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.reap()
                except Exception:  # the reaper must outlive one bad stream
                    log.exception("freeing idle videos failed")

        threading.Thread(target=loop, name="serve-reaper", daemon=True).start()

    def close_all(self) -> None:
        self._stop.set()
        with self._lock:
            streams = [self._take(sid) for sid in list(self._streams)]
        self._finish(streams, [])
        if self.encoder is not None:
            self.encoder.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)
