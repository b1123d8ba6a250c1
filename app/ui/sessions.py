"""Per-browser-session state (its own source, ingest thread and MemoryStream) and the registry that bounds it.

One shared Backbone serves every session (its lock serialises model calls, one forward at a time), and one
BatchEncoder batches their patches; nothing else is shared, so one user's stream, memory, thumbnails and
errors never reach another's page.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from longwatch.app.ui.thumbs import Thumbnails
from longwatch.app.ui.webcam import BrowserCamSource
from longwatch.app.worker import IngestWorker, WorkerStatus

log = logging.getLogger(__name__)
Clock = Callable[[], float]
_ids = itertools.count(1)


class SessionLimit(RuntimeError):
    """The configured maximum of concurrent sessions is reached."""


def limit_message(max_sessions: int) -> str:
    n = f"{max_sessions} session{'s' if max_sessions != 1 else ''}"
    return (f"This server already serves {n}, its configured maximum (ui.max_sessions). "
            "Close another tab, or reload this page in a few minutes.")


class Session:
    """One browser tab: at most one source at a time, feeding its own MemoryStream.

    Starting a source replaces the previous one and its memory (times from two videos cannot share
    one timeline). `last_active` moves on user actions only (see SessionManager).
    """

    def __init__(self, key: str, backbone: Any, cfg: Any, clock: Clock = time.monotonic,
                 encoder: Any | None = None) -> None:
        """`encoder`: a memory.multistream.BatchEncoder shared by the sessions of one backbone (None: each
        session encodes its own patches, still one forward at a time)."""
        self.key, self.bb, self.cfg, self.clock, self.encoder = key, backbone, cfg, clock, encoder
        self.id = f"s{next(_ids)}"
        self.last_active = clock()
        self.worker: IngestWorker | None = None
        self.cam: BrowserCamSource | None = None
        self.notice: tuple[str, str] | None = None
        """(level, text) shown above the source state until the next successful action."""
        self.play_pos: float | None = None
        """The upload player's position at the last refresh (seconds)."""
        self.closed = threading.Event()
        self._lock = threading.RLock()  # source switches
        self._generation = 0

    # ---- sources -------------------------------------------------------------------------------

    def touch(self) -> None:
        self.last_active = self.clock()

    @property
    def kind(self) -> str | None:
        worker = self.worker
        return worker.kind if worker else None

    def _memory(self) -> Any:
        from longwatch.memory.stream import MemoryStream

        self._generation += 1
        return MemoryStream(self.bb, self.cfg.memory, stream_id=f"{self.id}-{self._generation}")

    def _replace(self, kind: str, stream: Any, cam: BrowserCamSource | None = None) -> IngestWorker:
        with self._lock:
            if self.closed.is_set():
                stream.close()
                raise RuntimeError("session closed")
            self._stop_locked()
            try:
                memory = self._memory()
            except Exception:
                stream.close()
                raise
            self.cam = cam
            self.worker = IngestWorker(kind, stream, memory, Thumbnails(), encoder=self.encoder)
            return self.worker

    def start_file(self, path: str) -> IngestWorker:
        """Ingest an uploaded file as fast as the model allows (never paced: the player runs ahead of nothing).

        Raises ingest.IngestError at once for a file that is not a readable video.
        """
        self.touch()
        return self._replace("upload", self._file_stream(path))

    def _file_stream(self, path: str) -> Any:
        from longwatch.ingest import open_stream

        return open_stream(path, dataclasses.replace(self.cfg.ingest, realtime=False))

    def preload(self, path: str) -> IngestWorker | None:
        """start_file(path) unless a source is already running: the user's own choice, made while the
        page was still loading, wins over the demo's sample."""
        with self._lock:
            if self.worker is not None or self.closed.is_set():
                return None
            return self._replace("upload", self._file_stream(path))

    def start_url(self, url: str) -> IngestWorker:
        """Ingest a network stream (already checked by app.ui.validate.check_url); it connects in the background."""
        from longwatch.ingest import open_stream

        self.touch()
        return self._replace("url", open_stream(url, self.cfg.ingest))

    def start_webcam(self) -> IngestWorker:
        """Ingest frames the page pushes through push_webcam()."""
        from longwatch.ingest import PatchStream

        self.touch()
        cam = BrowserCamSource()
        return self._replace("webcam", PatchStream(cam, self.cfg.ingest), cam)

    def push_webcam(self, frame: Any) -> None:
        """One frame from the browser's camera; starts the webcam source on the first frame."""
        self.touch()
        with self._lock:  # two frames in flight must not start two webcam sources
            if self.kind != "webcam" or self.cam is None:
                self.start_webcam()
            cam = self.cam
        if cam is not None:
            cam.push(frame)

    def stop_source(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        worker, cam = self.worker, self.cam
        self.worker, self.cam = None, None
        if cam is not None:
            cam.close()
        if worker is not None:
            worker.close()

    # ---- answering and reporting ---------------------------------------------------------------

    def status(self) -> WorkerStatus | None:
        worker = self.worker
        return worker.status() if worker else None

    def ask(self, question: str, on_text: Callable[[str], None], now: float | None,
            should_stop: Callable[[], bool] | None = None) -> Any:
        """MemoryStream.ask on this session's memory; ValueError when there is nothing to ask about."""
        self.touch()
        worker = self.worker
        if worker is None:
            raise ValueError("no video yet: upload a video, start the webcam or connect a camera URL")

        def stop() -> bool:
            return self.closed.is_set() or self.worker is not worker or bool(should_stop and should_stop())

        # an upload is encoded ahead of its player: answer from what has played, not from the future
        until = now if worker.kind == "upload" and now is not None else None
        answer = worker.memory.ask(question, on_text=on_text, now=now, should_stop=stop, until=until)
        worker.note_memory(answer.memory)
        return answer

    def thumbnail(self, t: float) -> bytes | None:
        worker = self.worker
        return worker.thumbs.nearest(t) if worker else None

    def close(self) -> None:
        self.closed.set()
        self.stop_source()


class SessionManager:
    """Sessions by Gradio session hash: at most `max_sessions`, idle ones reaped.

    Idle means no user action (upload, connect, question, webcam frame, a playing video, an open
    page watching a live camera) for `idle_timeout_s`. The page's refresh alone does not count, so
    a forgotten tab on a finished or paused upload gives its slot back; a closed tab is freed at
    once through demo.unload, and a tab that vanished without one stops refreshing and idles out.
    """

    def __init__(self, factory: Callable[[str], Session], max_sessions: int, idle_timeout_s: float,
                 clock: Clock = time.monotonic) -> None:
        self.factory, self.max_sessions, self.idle_timeout_s, self.clock = factory, max_sessions, idle_timeout_s, clock
        self._sessions: dict[str, Session] = {}
        self._reaped: OrderedDict[str, None] = OrderedDict()  # recently reaped keys, so the page can say why
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def open(self, key: str) -> Session:
        """The session for `key`, created if needed; SessionLimit when the maximum is reached."""
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                return session
            if len(self._sessions) >= self.max_sessions:
                raise SessionLimit(limit_message(self.max_sessions))
            session = self.factory(key)
            self._sessions[key] = session
            self._reaped.pop(key, None)
            log.info("session %s opened (%d of %d)", session.id, len(self._sessions), self.max_sessions)
            return session

    def get(self, key: str) -> Session | None:
        with self._lock:
            return self._sessions.get(key)

    def was_reaped(self, key: str) -> bool:
        with self._lock:
            return key in self._reaped

    def close(self, key: str, reaped: bool = False) -> bool:
        """Free the session's stream and memory; False if there was none."""
        with self._lock:
            session = self._sessions.pop(key, None)
            if reaped and session is not None:
                self._reaped[key] = None
                while len(self._reaped) > 1024:
                    self._reaped.popitem(last=False)
        if session is None:
            return False
        session.close()  # outside the registry lock: it waits for the session's ingest thread
        log.info("session %s closed%s", session.id, " (idle)" if reaped else "")
        return True

    def reap(self) -> list[str]:
        """Close every session idle for longer than idle_timeout_s; returns their keys."""
        now = self.clock()
        with self._lock:
            idle = [k for k, s in self._sessions.items() if now - s.last_active > self.idle_timeout_s]
        for key in idle:
            self.close(key, reaped=True)
        return idle

    def start_reaper(self, interval_s: float | None = None) -> None:
        interval = interval_s or max(1.0, min(30.0, self.idle_timeout_s / 4))

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.reap()
                except Exception:  # the reaper must outlive one bad session
                    log.exception("reaping idle sessions failed")

        self._reaper = threading.Thread(target=loop, name="ui-reaper", daemon=True)
        self._reaper.start()

    def close_all(self) -> None:
        self._stop.set()
        with self._lock:
            keys = list(self._sessions)
        for key in keys:
            self.close(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
