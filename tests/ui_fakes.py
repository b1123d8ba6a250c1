"""A scripted stand-in for a UI Session: answers stream from a list of text pieces, as fast or slow as a test needs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

from longwatch.app.ui.events import Handlers
from longwatch.app.ui.sessions import SessionManager


class ScriptedSession:
    """What Handlers.ask uses of a Session: kind, status(), ask() and thumbnail().

    ask() holds `model_lock` while it "decodes" (as the real model lock), emits one piece every `gap_s`,
    checks should_stop after each, and ends with an end-of-turn unless it was stopped.
    """

    kind = "url"
    id = "scripted"

    def __init__(self, pieces: list[str], gap_s: float = 0.0) -> None:
        self.pieces, self.gap_s = pieces, gap_s
        self.model_lock = threading.Lock()
        self.asked: list[str] = []
        self.stop_seen = threading.Event()
        """should_stop() returned True during an answer."""

    def status(self) -> None:
        return None

    def thumbnail(self, t: float) -> bytes | None:
        return None

    def ask(self, question: str, on_text: Callable[[str], None], now: float | None,
            should_stop: Callable[[], bool] | None = None) -> SimpleNamespace:
        self.asked.append(question)
        emitted: list[str] = []
        stopped = False
        with self.model_lock:
            for piece in self.pieces:
                on_text(piece)
                emitted.append(piece)
                if should_stop is not None and should_stop():
                    self.stop_seen.set()
                    stopped = True
                    break
                time.sleep(self.gap_s)
        ended = not stopped
        return SimpleNamespace(text="".join(emitted), token_ids=list(range(len(emitted))), ttft_s=0.01,
                               context_tokens=100, evidence=[], stopped=ended, memory={})


def scripted_handlers(session: ScriptedSession, **kw) -> Handlers:
    """Handlers whose every tab gets `session`."""
    manager = SessionManager(lambda key: session, max_sessions=4, idle_timeout_s=60)  # type: ignore[arg-type]
    return Handlers(manager, max_upload_mb=1, allowed_schemes=("rtsp",), **kw)


def req(key: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=key)  # what Gradio's gr.Request gives the handlers
