"""What each page event does: open a session, start a source, stream (or stop) an answer, refresh the panels.

Every handler turns failures into messages in the page (app.ui.panels); none lets an exception
reach Gradio, so the browser never shows a traceback and a failure stays inside its session.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from longwatch.app.ui import panels
from longwatch.app.ui.answer import AnswerRuns, AnswerUpdate, stream_answer
from longwatch.app.ui.sessions import Session, SessionLimit, SessionManager, limit_message
from longwatch.app.ui.timelinks import format_clock, linkify
from longwatch.app.ui.validate import InputRejected, check_upload, check_url
from longwatch.app.ui.webcam import BrowserCamSource
from longwatch.ingest import IngestError

log = logging.getLogger(__name__)

LIVE_STATES = ("connecting", "streaming", "reconnecting")
WEBCAM_PAUSED_S = 3.0
"""No webcam frame for this long: the page shows the camera as paused."""

Chat = list[dict[str, Any]]


@dataclass
class Handlers:
    manager: SessionManager
    max_upload_mb: int
    allowed_schemes: tuple[str, ...]
    preload: str | None = None
    """A video every new session starts with (the demo's sample)."""
    thinking_model: bool = False
    """The model is a Thinking checkpoint: its answers open with reasoning (app.ui.reasoning)."""
    webcam_time_limit_s: float = 0.0
    """ui.webcam_time_limit_s: the webcam stream's time limit (0: none), named when a stream ends by it."""
    runs: AnswerRuns = field(default_factory=AnswerRuns)
    """The answers streaming now, for the Stop button."""

    # ---- sessions ------------------------------------------------------------------------------

    def _session(self, request: gr.Request) -> Session:
        """The caller's session, created if there is room (SessionLimit otherwise)."""
        return self.manager.open(request.session_hash)

    def _missing(self, request: gr.Request) -> str:
        if self.manager.was_reaped(request.session_hash):
            return (f"This session was closed after {self.manager.idle_timeout_s / 60:g} minutes without "
                    "activity, and its memory freed. Upload a video or connect a camera to start again.")
        return limit_message(self.manager.max_sessions)

    def load(self, request: gr.Request) -> tuple[str, str, str]:
        try:
            session = self._session(request)
        except SessionLimit as e:
            return panels.notice_html("error", str(e)), panels.memory_html(None), panels.now_label(None, None, 0)
        if self.preload:
            try:
                session.preload(self.preload)  # not a user action: leaves any message the user got
            except Exception as e:
                log.exception("preloading %s failed", self.preload)
                session.notice = ("error", f"Could not open the sample video: {type(e).__name__}: {e}")
        return self.tick(None, request)

    def unload(self, request: gr.Request) -> None:
        self.runs.forget(request.session_hash)
        try:
            self.manager.close(request.session_hash)
        except Exception:  # the tab is gone; nothing to show, but the server must go on
            log.exception("closing a session failed")

    # ---- sources -------------------------------------------------------------------------------

    def _start(self, session: Session, start: Any, what: str, path: str | None = None) -> None:
        try:
            start()
            session.notice = None
        except (InputRejected, IngestError) as e:
            msg = str(e)
            if path:  # the server's upload folder is no business of the page
                msg = msg.replace(path, os.path.basename(path))
            session.notice = ("error", msg)
        except Exception as e:  # out of memory building the cache, a bug: this session only
            log.exception("starting %s failed", what)
            session.notice = ("error", f"Could not start the {what}: {type(e).__name__}: {e}")

    def upload(self, path: str | None, request: gr.Request) -> tuple[str, Chat]:
        try:
            session = self._session(request)
        except SessionLimit as e:
            return panels.notice_html("error", str(e)), []
        self._start(session, lambda: session.start_file(check_upload(path, self.max_upload_mb)), "video", path)
        return panels.source_html(session.status(), session.notice), []

    def clear_source(self, request: gr.Request) -> str:
        session = self.manager.get(request.session_hash)
        if session is None:
            return panels.notice_html("error", self._missing(request))
        session.touch()
        session.stop_source()
        session.notice = ("info", "Source closed and its memory freed.")
        return panels.source_html(None, session.notice)

    def connect(self, url: str, request: gr.Request) -> tuple[str, Chat]:
        try:
            session = self._session(request)
        except SessionLimit as e:
            return panels.notice_html("error", str(e)), []
        self._start(session, lambda: session.start_url(check_url(url, self.allowed_schemes)), "stream")
        return panels.source_html(session.status(), session.notice), []

    def webcam_frame(self, frame: Any, request: gr.Request) -> None:
        if frame is None:
            return
        try:
            session = self._session(request)
            session.push_webcam(frame)
            session.notice = None
        except SessionLimit:
            return  # the panels already say the server is full
        except Exception as e:  # a malformed frame must not end the stream event with a traceback
            log.warning("webcam frame rejected: %s", e, exc_info=True)

    def webcam_ended(self, request: gr.Request) -> None:
        """The webcam's stream event ended (time limit, Record stopped): refreshes say so if no frame follows."""
        session = self.manager.get(request.session_hash)
        cam = session.cam if session is not None else None
        if cam is not None:
            end = cam.stream_ended()
            log.info("webcam stream of session %s ended after %.0f s", session.id, end.ran_s)

    def _webcam_idle(self, cam: BrowserCamSource, idle: float) -> str:
        """Why no webcam frame came for `idle` seconds: the stream's time limit, or the user paused the camera."""
        limit, end = self.webcam_time_limit_s, cam.last_end
        # ran_s counts from the event's first frame, which comes a moment after the event starts
        if limit and end is not None and end.at >= cam.last_frame_at and end.ran_s >= limit - 2.0:
            span = f"{limit / 60:g}-minute" if limit % 60 == 0 else f"{limit:g}-second"
            return (f"Webcam stopped at {time.strftime('%H:%M', time.localtime(end.wall))} after the {span} "
                    "limit (ui.webcam_time_limit_s); press Record to continue. Memory keeps what it saw.")
        return f"Webcam paused: no frame for {idle:.0f} s. Memory keeps what it saw; press record to resume."

    # ---- answers -------------------------------------------------------------------------------

    def ask(self, question: str, play_pos: float | None, history: Chat | None,
            request: gr.Request) -> Iterator[tuple[Chat, str]]:
        chat = list(history or [])
        q = (question or "").strip()
        if not q:
            yield chat, ""
            return
        session = self.manager.get(request.session_hash)
        if session is None:
            try:
                session = self._session(request)
            except SessionLimit as e:
                yield chat + [{"role": "assistant", "content": panels.error_html(str(e))}], question
                return
        kind = session.kind
        now = play_pos if kind == "upload" and play_pos is not None else None
        status = session.status()
        at = now if now is not None else (status.t_last if status else 0.0)
        # a player the browser cannot play (an mkv, say) has no position: then "now" is the end of memory
        where = "play position" if now is not None else "end of the video" if kind == "upload" else "live edge"
        chat.append({"role": "user", "content": f"{linkify(q)}\n\n<small>asked at {format_clock(at)} · {where}</small>"})
        yield chat + [{"role": "assistant", "content": "…"}], ""  # a fresh list per step: each its own snapshot
        key = request.session_hash
        stop = self.runs.start(key)
        # Stop that came while the question waited in the queue ends it before the model is asked
        updates = ([AnswerUpdate("", stopped=True)] if stop.is_set() else
                   stream_answer(lambda on_text, should_stop: session.ask(q, on_text, now, should_stop), stop=stop))
        try:
            for up in updates:
                yield chat + panels.answer_messages(up, session.thumbnail, self.thinking_model), ""
        finally:
            self.runs.end(key, stop)

    def stop(self, request: gr.Request) -> Any:
        """The Stop button: this tab's answers stop after their model's current token (a queued one at once)."""
        if self.runs.stop(request.session_hash):
            log.info("answer stopped by the user")
        return gr.update(interactive=False)  # until the answer has ended and Stop is hidden

    def stop_shown(self, request: gr.Request) -> Any:
        """A question was sent: Stop appears, armed for its answer (queued or streaming)."""
        self.runs.arm(request.session_hash)
        return gr.update(visible=True, interactive=True)

    @staticmethod
    def stop_hidden() -> Any:
        """And goes once it has ended."""
        return gr.update(visible=False)

    # ---- live panels ---------------------------------------------------------------------------

    def tick(self, play_pos: float | None, request: gr.Request) -> tuple[str, str, str]:
        """Source state, memory panel and "now" label; a playing video counts as activity."""
        session = self.manager.get(request.session_hash)
        if session is None:
            return panels.notice_html("error", self._missing(request)), panels.memory_html(None), \
                panels.now_label(None, None, 0)
        try:
            status = session.status()
            if status is not None and status.kind == "upload" and play_pos is not None:
                if session.play_pos is not None and abs(play_pos - session.play_pos) > 1e-3:
                    session.touch()  # the video is playing (or being scrubbed): someone is watching
                session.play_pos = play_pos
            elif status is not None and status.kind != "upload" and status.state in LIVE_STATES:
                session.touch()  # an open page watching a live source is the use case, not idling
            source = panels.source_html(status, session.notice)
            cam = session.cam
            if status is not None and status.kind == "webcam" and cam and cam.last_frame_at is not None:
                idle = time.monotonic() - cam.last_frame_at
                if idle > WEBCAM_PAUSED_S:
                    source += panels.notice_html("info", self._webcam_idle(cam, idle))
            return (source, panels.memory_html(status, play_pos),
                    panels.now_label(session.kind, play_pos, status.t_last if status else 0.0))
        except Exception as e:  # never a traceback in the page, even from a panel
            log.exception("refresh failed")
            return panels.notice_html("error", f"Refresh failed: {type(e).__name__}: {e}"), "", ""
