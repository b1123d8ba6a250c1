"""The page keeps up: Stop ends a streaming answer (the model stops decoding), and the webcam says why it stopped."""

from __future__ import annotations

import time

import numpy as np

from longwatch.app.config import load_config
from longwatch.app.ui.events import Handlers
from longwatch.app.ui.layout import build
from longwatch.app.ui.sessions import Session, SessionManager
from tests.memory_fakes import fake_backbone
from tests.ui_fakes import ScriptedSession, req, scripted_handlers

LONG = [f"w{i} " for i in range(2000)]


def test_stop_ends_the_answer_the_model_lets_go_and_the_next_question_runs():
    session = ScriptedSession(LONG, gap_s=0.005)
    h = scripted_handlers(session)
    assert h.stop_shown(req("t"))["visible"] is True  # a question was sent: Stop appears
    steps = h.ask("Describe everything.", None, [], req("t"))
    next(steps), next(steps)  # the question, then the first words
    h.stop(req("other-tab"))  # another tab's Stop reaches only its own answers
    assert not session.stop_seen.is_set()
    t0 = time.monotonic()
    assert h.stop(req("t")) == {"__type__": "update", "interactive": False}
    rest = list(steps)
    assert time.monotonic() - t0 < 2 and session.stop_seen.is_set()  # should_stop turned true in the model loop
    assert session.model_lock.acquire(timeout=1)  # and it gave the model lock back
    session.model_lock.release()
    final = rest[-1][0][-1]["content"]
    assert final.startswith("w0 w1") and "(stopped)" in final and "w1999" not in final
    assert "stopped · first token" in final  # it kept its timing line (and evidence strip)
    assert h.stop_hidden()["visible"] is False and len(h.runs) == 0

    session.pieces = ["The", " door"]  # the session answers the next question in full
    h.stop_shown(req("t"))
    chat = list(h.ask("And now?", None, rest[-1][0], req("t")))[-1][0]
    assert len(chat) == 4 and chat[-1]["content"].startswith("The door") and "(stopped)" not in chat[-1]["content"]


def test_stop_while_the_question_is_queued_answers_without_the_model():
    session = ScriptedSession(LONG)
    h = scripted_handlers(session)
    h.stop_shown(req("t"))
    h.stop(req("t"))  # the question waits behind other tabs' answers; the user gives up on it
    final = list(h.ask("Describe everything.", None, [], req("t")))[-1][0][-1]["content"]
    assert "(stopped)" in final and session.asked == []


def webcam_handlers(limit_s: float) -> tuple[Handlers, Session]:
    cfg = load_config(None, {"ingest.frame_size": "64"})
    manager = SessionManager(lambda key: Session(key, fake_backbone(), cfg), max_sessions=1, idle_timeout_s=3600)
    h = Handlers(manager, max_upload_mb=1, allowed_schemes=("rtsp",), webcam_time_limit_s=limit_s)
    session = manager.open("t")
    session.start_webcam()
    return h, session


def test_a_webcam_stopped_by_its_time_limit_says_when_and_why_then_resumes():
    h, session = webcam_handlers(900)
    try:
        frame = np.zeros((48, 64, 3), np.uint8)
        now = time.monotonic()
        session.cam.push(frame, now=now - 905)  # the stream event's first frame
        session.cam.push(frame, now=now - 10)  # its last, 15 minutes later
        h.webcam_ended(req("t"))  # Gradio ended the event at its time limit; no frame followed
        source = h.tick(None, req("t"))[0]
        assert "Webcam stopped at " in source and "after the 15-minute limit (ui.webcam_time_limit_s)" in source
        assert "press Record to continue" in source
        session.cam.push(frame)  # the page opened a new stream event: frames again
        assert "Webcam stopped" not in h.tick(None, req("t"))[0]
    finally:
        h.manager.close_all()


def test_a_webcam_the_user_paused_is_not_blamed_on_the_limit():
    h, session = webcam_handlers(900)
    try:
        frame = np.zeros((48, 64, 3), np.uint8)
        now = time.monotonic()
        session.cam.push(frame, now=now - 60)
        session.cam.push(frame, now=now - 10)
        h.webcam_ended(req("t"))  # Record stopped after a minute
        source = h.tick(None, req("t"))[0]
        assert "Webcam paused: no frame for 10 s" in source and "limit" not in source
    finally:
        h.manager.close_all()


def test_by_default_the_webcam_stream_has_no_time_limit():
    cfg = load_config()
    assert cfg.ui.webcam_time_limit_s == 0
    h = scripted_handlers(ScriptedSession([]))

    def stream_limit(limit_s: float) -> int | None:
        demo = build(h, fps=2.0, max_sessions=2, webcam_time_limit_s=limit_s)
        (fn,) = [f for f in demo.fns.values() if f.name == "webcam_frame"]
        return fn.time_limit

    assert stream_limit(cfg.ui.webcam_time_limit_s) is None and stream_limit(900) == 900
