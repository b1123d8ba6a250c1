"""Page events without a browser: every failure is a message in the page, answers stream with evidence."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest

from longwatch.app.config import load_config
from longwatch.eval.sample_video import make_sample_video
from longwatch.app.ui.events import Handlers
from longwatch.app.ui.sessions import Session, SessionManager

CFG = load_config(None, {"ingest.frame_size": "128", "model.max_new_tokens": 6})


def req(key: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=key)  # what Gradio's gr.Request gives the handlers


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("ev") / "signs.mp4"
    make_sample_video(path, seconds=12, size=(120, 160), fps=6)
    return str(path)


@pytest.fixture
def handlers(tiny, video):
    manager = SessionManager(lambda key: Session(key, tiny, CFG), max_sessions=2, idle_timeout_s=60)
    h = Handlers(manager, max_upload_mb=1, allowed_schemes=CFG.ui.allowed_schemes, preload=video)
    yield h
    manager.close_all()


def ingested(h: Handlers, key: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = h.manager.get(key).status()
        if s and s.state == "ended" and not s.busy:
            return
        time.sleep(0.05)
    raise AssertionError("sample not ingested")


def test_a_new_tab_starts_on_the_preloaded_video_and_the_panels_show_it(handlers):
    handlers.load(req("t1"))
    ingested(handlers, "t1")
    source, memory, now = handlers.tick(3.5, req("t1"))
    assert 'data-state="ended"' in source and "signs.mp4 is in memory: 12 patches" in source
    assert re.search(r'id="lw-patches">12<', memory) and "policy <b>rekv</b>" in memory
    assert "GiB" in memory and "dropped frames" in memory
    assert 'data-now="3.50"' in now and "play position" in now


def test_an_answer_streams_then_carries_seek_links_and_an_evidence_strip(handlers):
    handlers.load(req("t1"))
    ingested(handlers, "t1")
    steps = list(handlers.ask("What did the sign say at 00:03?", 7.25, [], req("t1")))
    assert len(steps) >= 3  # the question, growing text, the final answer
    first_chat, cleared = steps[0]
    assert cleared == "" and first_chat[-1]["content"] == "…"
    user = first_chat[-2]["content"]
    assert 'href="#t=3.00"' in user and "asked at 00:07 · play position" in user
    final = steps[-1][0][-1]["content"]
    assert 'class="lw-ev"' in final and final.count("data:image/jpeg;base64,") >= 3
    assert "named time" in final and re.search(r'href="#t=3\.00"', final)
    assert "first token" in final


def test_bad_inputs_become_messages_that_never_leak_server_paths(handlers, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all " * 10)
    source, chat = handlers.upload(str(fake), req("t2"))
    assert "lw-error" in source and "notes.mp4: not a readable video" in source
    assert str(tmp_path) not in source and chat == []
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 1_500_000)
    source, _ = handlers.upload(str(big), req("t2"))
    assert "big.mp4 is 2 MB; the limit is 1 MB" in source
    for url, needle in (("file:///etc/passwd", "file:// is not allowed"), ("/etc/passwd", "not a URL"),
                        ("smb://nas/cam", "smb:// is not allowed")):
        source, _ = handlers.connect(url, req("t2"))
        assert needle in source and "Traceback" not in source


def test_an_unreachable_camera_is_reported_with_its_reason(handlers):
    handlers.connect("rtsp://127.0.0.1:9/live", req("t3"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        source, _, _ = handlers.tick(None, req("t3"))
        if 'data-state="failed"' in source:
            break
        time.sleep(0.1)
    assert 'data-state="failed"' in source and "connection refused" in source


def test_the_session_limit_and_a_reaped_session_are_explained_in_the_page(handlers):
    handlers.load(req("a"))
    handlers.load(req("b"))
    source, _, _ = handlers.load(req("c"))
    assert "already serves 2 sessions" in source
    steps = list(handlers.ask("anything?", None, [], req("c")))
    assert "already serves 2 sessions" in steps[-1][0][-1]["content"]
    handlers.manager.close("a", reaped=True)
    source, memory, _ = handlers.tick(None, req("a"))
    assert "closed after 1 minutes without activity" in source and "empty" in memory


def test_a_model_failure_while_answering_is_a_message_and_the_session_survives(handlers, monkeypatch):
    handlers.load(req("t4"))
    ingested(handlers, "t4")
    memory = handlers.manager.get("t4").worker.memory

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(memory, "ask", broken)
    steps = list(handlers.ask("What is this?", None, [], req("t4")))
    assert "Model failure while answering: RuntimeError: out of memory" in steps[-1][0][-1]["content"]
    monkeypatch.undo()
    steps = list(handlers.ask("And now?", None, steps[-1][0], req("t4")))
    assert "lw-ev" in steps[-1][0][-1]["content"] and len(steps[-1][0]) == 4


def test_closing_the_tab_frees_the_session(handlers):
    handlers.load(req("t5"))
    worker = handlers.manager.get("t5").worker
    handlers.unload(req("t5"))
    assert handlers.manager.get("t5") is None and not worker.running


def test_an_open_page_on_a_live_source_is_activity_a_finished_upload_is_not(handlers):
    handlers.load(req("t6"))
    ingested(handlers, "t6")
    session = handlers.manager.get("t6")
    session.last_active = 0.0
    handlers.tick(4.0, req("t6"))
    handlers.tick(4.0, req("t6"))  # a paused upload: refreshing alone is not activity
    assert session.last_active == 0.0
    handlers.tick(5.0, req("t6"))  # playing
    assert session.last_active > 0
    session.start_webcam()
    session.last_active = 0.0
    handlers.tick(None, req("t6"))  # waiting for the camera, the page open
    assert session.last_active > 0
