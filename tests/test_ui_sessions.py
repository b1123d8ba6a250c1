"""Per-tab sessions on one shared model: background ingest, isolation, limits, idle reaping, failures."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from longwatch.app.config import load_config
from longwatch.eval.sample_video import make_sample_video
from longwatch.app.ui.sessions import Session, SessionLimit, SessionManager

CFG = load_config(None, {"ingest.frame_size": "128", "model.max_new_tokens": 8, "memory.window_blocks": 4,
                         "memory.retrieve_blocks": 4, "memory.time_blocks": 2})


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("ui") / "signs.mp4"
    make_sample_video(path, seconds=20, size=(120, 160), fps=6)
    return str(path)


def wait_done(session: Session, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = session.status()
        if s is not None and s.state in ("ended", "failed") and not s.busy:
            return s
        time.sleep(0.05)
    raise AssertionError(f"ingest did not finish: {session.status()}")


def test_an_upload_is_encoded_in_the_background_faster_than_it_plays(tiny, video):
    session = Session("a", tiny, CFG)
    t0 = time.monotonic()
    session.start_file(video)
    assert session.status().state in ("connecting", "streaming", "ended")  # returned at once
    status = wait_done(session)
    elapsed = time.monotonic() - t0
    try:
        assert status.state == "ended" and status.error is None
        assert status.patches == 20 and status.t_last == pytest.approx(20.0)
        assert elapsed < 20.0, f"20 s of video took {elapsed:.1f} s"  # at least as fast as playback
        assert status.memory["patches"] == 20 and set(status.memory["tiers"]) == {"device", "host", "disk"}
        assert len(session.worker.thumbs) == 20
    finally:
        session.close()


def test_an_answer_streams_and_names_the_blocks_it_used(tiny, video):
    session = Session("a", tiny, CFG)
    session.start_file(video)
    wait_done(session)
    pieces = []
    answer = session.ask("What did the sign say at 00:13?", on_text=pieces.append, now=15.0)
    early = session.ask("What did the sign say at 00:13?", on_text=lambda s: None, now=5.0)
    session.close()
    assert pieces and "".join(pieces).strip() == answer.text.strip()
    assert any(e.reason == "time" and e.t_start <= 13 < e.t_end + 1 for e in answer.evidence)
    # played up to 00:05 only: nothing after the play position is used, even though it is encoded
    assert early.evidence and max(e.t_start for e in early.evidence) < 5.0
    assert session.worker is None


def test_sessions_never_share_memory_and_one_closing_leaves_the_other(tiny, video, tmp_path):
    short = make_sample_video(tmp_path / "short.mp4", seconds=6, size=(120, 160), fps=6) and str(tmp_path / "short.mp4")
    a, b = Session("a", tiny, CFG), Session("b", tiny, CFG)
    a.start_file(video)
    b.start_file(short)
    sa, sb = wait_done(a), wait_done(b)
    assert (sa.patches, sb.patches) == (20, 6)
    assert a.worker.memory is not b.worker.memory and a.worker.thumbs is not b.worker.thumbs
    a.close()
    answer = b.ask("What is happening?", on_text=lambda s: None, now=None)
    assert max(e.t_end for e in answer.evidence) <= 6.5  # b only ever saw its own 6 s
    b.close()


def test_a_model_failure_stops_that_session_only(tiny, video):
    class Broken(Session):
        def _memory(self):
            memory = super()._memory()

            def fail(patch):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")

            memory.ingest = fail
            return memory

    bad, good = Broken("bad", tiny, CFG), Session("good", tiny, CFG)
    bad.start_file(video)
    good.start_file(video)
    s_bad, s_good = wait_done(bad), wait_done(good)
    try:
        assert s_bad.state == "failed"
        assert s_bad.reason == ("Model failure while encoding 00:00: RuntimeError: "
                                "CUDA error: an illegal memory access was encountered")
        assert s_good.state == "ended" and s_good.patches == 20
    finally:
        bad.close()
        good.close()


def test_memory_settings_that_cannot_fit_the_frame_are_reported(tiny, video):
    cfg = load_config(None, {"ingest.frame_size": "128", "memory.device_budget": "64KB"})
    session = Session("a", tiny, cfg)
    session.start_file(video)
    status = wait_done(session)
    session.close()
    assert status.state == "failed" and status.reason.startswith("The memory settings do not fit this video: memory.")


def test_webcam_frames_are_stamped_by_arrival_and_a_pause_is_a_gap(tiny):
    session = Session("cam", tiny, CFG)
    session.start_webcam()
    rng = np.random.default_rng(0)
    times = [i * 0.25 for i in range(17)] + [10 + i * 0.25 for i in range(9)]  # 0-4 s, pause, 10-12 s
    for t in times:
        session.cam.push(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), now=100.0 + t)
        time.sleep(0.01)
    deadline = time.monotonic() + 30
    while session.status().patches < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = session.status()
    session.close()
    assert status.kind == "webcam" and status.state == "streaming"
    assert status.patches >= 6 and status.t_last == pytest.approx(12.0, abs=0.6)
    assert status.ingest["gaps"] == 1 and status.ingest["gap_s"] >= 5


def test_a_new_source_replaces_the_old_one_and_its_memory(tiny, video):
    session = Session("a", tiny, CFG)
    first = session.start_file(video)
    wait_done(session)
    session.start_webcam()
    assert not first.running and session.kind == "webcam"
    session.close()
    assert session.worker is None and session.cam is None


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_maximum_is_enforced_with_a_message_and_idle_sessions_are_freed(tiny):
    clock = FakeClock()
    closed = []

    def factory(key):
        s = Session(key, tiny, CFG, clock=clock)
        s.close = lambda: closed.append(key)  # type: ignore[method-assign]
        return s

    manager = SessionManager(factory, max_sessions=2, idle_timeout_s=60, clock=clock)
    a, _ = manager.open("a"), manager.open("b")
    assert manager.open("a") is a and len(manager) == 2
    with pytest.raises(SessionLimit, match="already serves 2 sessions"):
        manager.open("c")
    clock.t += 50
    a.touch()  # a user action in tab a
    clock.t += 20  # b idle for 70 s, a for 20 s
    assert manager.reap() == ["b"] and closed == ["b"]
    assert manager.was_reaped("b") and not manager.was_reaped("a")
    assert manager.open("c") is not None  # the freed slot is usable at once
    assert manager.close("a") and closed == ["b", "a"] and manager.get("a") is None
    assert not manager.close("a")


def test_closing_a_session_stops_its_threads(tiny, video):
    before = {t.name for t in threading.enumerate()}
    manager = SessionManager(lambda key: Session(key, tiny, CFG), max_sessions=4, idle_timeout_s=60)
    session = manager.open("tab")
    session.start_url("rtsp://127.0.0.1:9/nothing")  # refused at once; the stream's thread still runs
    worker = session.worker
    session2 = manager.open("tab2")
    session2.start_file(video)
    manager.close_all()
    assert not worker.running and session.closed.is_set() and session2.worker is None
    time.sleep(0.5)
    leftover = {t.name for t in threading.enumerate()} - before
    assert not [n for n in leftover if n.startswith(("ui-ingest", "ingest"))], leftover


def test_the_demo_sample_never_replaces_a_source_the_user_already_chose(tiny, video):
    session = Session("a", tiny, CFG)
    session.start_webcam()
    assert session.preload(video) is None and session.kind == "webcam"
    session.stop_source()
    assert session.preload(video) is not None and session.kind == "upload"
    session.close()
