"""Eight UI sessions on one model, driven through gradio_client; one camera dies and the other seven carry on.

The soak rule of issue 13: bad input never takes down other users' sessions or streams. The real
Gradio app (create_app, as `longwatch ui` builds it) serves the `tiny` preset on a loopback port; eight
gradio_client tabs (each its own Gradio session hash, as eight browser tabs) connect to RTSP cameras:
seven to one GstRtspServer, one to another that is SIGKILLed mid-stream. Each tab polls the page's
/tick endpoint as the page's timer does and asks through /ask, the Ask button's endpoint. The seven are
live cameras, not uploads: an upload is encoded unpaced and is all in memory seconds later, so only a
live source can show that encoding goes on after the kill. Random weights: the answers' text is noise;
what counts is that each comes, in time, with its evidence.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from longwatch.app.config import load_config
from longwatch.app.ui.server import create_app
from tests.ingest_fixtures import RtspServer, free_port, make_video, require_rtsp

pytestmark = pytest.mark.rtsp

SESSIONS = 8
# 2 fps, small frames: eight live cameras fit two CPU cores. Short network timeouts and three reconnect
# attempts, so the dead camera goes connected -> reconnecting -> failed within the test.
CFG = load_config(None, {"ui.max_sessions": SESSIONS, "ingest.fps": 2.0, "ingest.frame_size": "64",
                         "ingest.open_timeout_s": 3.0, "ingest.read_timeout_s": 2.0,
                         "ingest.reconnect_initial_s": 0.5, "ingest.reconnect_max_s": 1.0,
                         "ingest.reconnect_attempts": 3, "memory.window_blocks": 4,
                         "memory.retrieve_blocks": 4, "memory.time_blocks": 2})
POLL_S = 0.5
"""Each tab refreshes this often (the page's timer: 1 s)."""
ANSWER_BOUND_S = 30.0
"""Ask-to-final-answer, while seven cameras encode and the eighth reconnects. Measured on two shared CPU
cores: 8.7-10.1 s for eight questions at once, 64 tokens each, decoding together (AnswerRows: 95 forwards
for 489 tokens, 5.1 answers per forward). Taking turns per token on the model lock instead, every answer
took as long as all eight (23.9-24.7 s), past this bound in a CI run on a slower machine."""
ADVANCE_S = 5.0
"""Stream seconds each surviving camera must encode after the kill."""


@dataclass
class Tick:
    wall: float
    state: str | None
    t_last: float
    source: str
    lag: float
    """Seconds behind the camera's live edge (memory panel)."""


@dataclass
class Tab:
    """One browser tab's worth of API calls, with its own Gradio session hash."""

    url: str
    ticks: list[Tick] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    took: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        from gradio_client import Client

        # a browser waits longer than httpx's 5 s default for the queue to take a request
        self.client = Client(self.url, verbose=False, download_files=False, httpx_kwargs={"timeout": 60})
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def load(self) -> str:
        source, _memory, _now = self.client.predict(api_name="/load")
        return source

    def connect(self, camera: str) -> str:
        source, _chat = self.client.predict(camera, api_name="/connect")
        return source

    def tick(self) -> Tick:
        t0 = time.monotonic()
        source, memory, now = self.client.predict(None, api_name="/tick")
        self.took.append(time.monotonic() - t0)
        m = re.search(r'data-state="(\w+)"', source)
        t = re.search(r'data-now="([\d.]+)"', now)
        lag = re.search(r'id="lw-lag">([\d.]+)<', memory)
        tick = Tick(time.monotonic(), m.group(1) if m else None, float(t.group(1)) if t else 0.0, source,
                    float(lag.group(1)) if lag else 0.0)
        self.ticks.append(tick)
        return tick

    def ask(self, question: str) -> tuple[str, float]:
        """The final assistant message (HTML) and seconds from asking to it."""
        t0 = time.monotonic()
        job = self.client.submit(question, None, [], api_name="/ask")
        try:
            chat, _question = job.result(timeout=ANSWER_BOUND_S)
        except TimeoutError:
            raise AssertionError(f"no answer {ANSWER_BOUND_S} s after asking: {job.status()}") from None
        return message_text(chat[-1]), time.monotonic() - t0

    def poll(self) -> None:
        def loop() -> None:
            while not self._stop.wait(POLL_S):
                try:
                    self.tick()
                except Exception as e:  # recorded: the test fails on any
                    self.errors.append(f"{type(e).__name__}: {e}")

        self._poller = threading.Thread(target=loop, name="test-tab-poll", daemon=True)
        self._poller.start()

    def latest(self) -> Tick:
        return self.ticks[-1] if self.ticks else Tick(0.0, None, 0.0, "", 0.0)

    def close(self) -> None:
        self._stop.set()
        if self._poller:
            self._poller.join(5)
        self.client.close()


def message_text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(c.get("text", "") for c in content if isinstance(c, dict))


def answer_parts(html: str) -> tuple[str, list[float]]:
    """(answer text before the evidence strip, the start times the evidence strip links to)."""
    text, _, strip = html.partition('<div class="lw-ev">')
    return text.strip(), [float(t) for t in re.findall(r'href="#t=([\d.]+)"', strip)]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    require_rtsp()
    return make_video(tmp_path_factory.mktemp("cams") / "cam.mp4", seconds=90, fps=15, size=(120, 160), gop=15)


@pytest.fixture
def app(tiny):
    """The real page on one shared tiny backbone, on a free loopback port; yields (url, SessionManager)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo, manager = create_app(CFG, tiny)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                show_error=False, ssr_mode=False)
    try:
        yield f"http://127.0.0.1:{port}", manager
    finally:
        closing = threading.Thread(target=manager.close_all, name="test-close-all", daemon=True)
        closing.start()
        closing.join(30)
        demo.close()
        assert not closing.is_alive(), "closing the sessions hung (a session's worker holds the model lock?)"


@pytest.fixture
def thread_crashes():
    """Exceptions that escaped any thread (ingest, answer, Gradio worker) while the test ran."""
    crashes: list[str] = []
    before = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        crashes.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")
        before(args)

    threading.excepthook = hook
    yield crashes
    threading.excepthook = before


@pytest.mark.timeout(180)
def test_eight_sessions_one_camera_dies_and_the_other_seven_keep_streaming_and_answering(
        clip, app, thread_crashes, caplog):
    url, manager = app
    caplog.set_level(logging.ERROR, logger="longwatch.app")
    cams, doomed_cam = RtspServer(clip), RtspServer(clip)
    pool = ThreadPoolExecutor(SESSIONS)
    tabs: list[Tab] = []
    try:
        servers = [pool.submit(s.start) for s in (cams, doomed_cam)]
        tabs = list(pool.map(lambda _: Tab(url), range(SESSIONS)))
        doomed, others = tabs[0], tabs[1:]
        for f in servers:
            f.result()
        list(pool.map(lambda tab: tab.load(), tabs))  # eight tabs open and connect at once
        started = list(pool.map(lambda tc: tc[0].connect(tc[1]),
                                [(doomed, doomed_cam.url)] + [(t, cams.url) for t in others]))
        assert all("lw-error" not in s for s in started), started
        assert len(manager) == SESSIONS
        for tab in tabs:
            tab.poll()
        wait_until(lambda: all(t.latest().state == "streaming" and t.latest().t_last >= 3.0 for t in tabs),
                   40, "all eight cameras streaming, 3 s in memory each")

        doomed_cam.kill()  # SIGKILL mid-stream
        killed = time.monotonic()
        at_kill = [t.latest().t_last for t in others]

        def ask_the_dead_camera() -> tuple[Tick, str, float]:
            wait_until(lambda: any(t.state == "failed" for t in doomed.ticks), 30, "the dead camera to fail")
            last = doomed.latest()
            return last, *doomed.ask("What did the camera show?")

        # the seven ask while the dead camera is still being retried; its own tab asks once it has failed
        dead = pool.submit(ask_the_dead_camera)
        answers = list(pool.map(lambda t: t.ask("What is happening now?"), others))
        last_doomed, doomed_answer, doomed_latency = dead.result()
        wait_until(lambda: all(t.latest().t_last >= t0 + ADVANCE_S for t, t0 in zip(others, at_kill)),
                   30, f"every other camera to encode {ADVANCE_S} s more after the kill")
        after = [t.latest() for t in others]
        elapsed = time.monotonic() - killed
        with urllib.request.urlopen(url, timeout=10) as r:  # the server still serves new pages
            page_status = r.status
    finally:
        for tab in tabs:
            tab.close()
        for server in (cams, doomed_cam):
            server.kill()
        pool.shutdown(wait=False, cancel_futures=True)  # a stuck question must not hang the test too

    # the dead camera: reconnecting with the reason and the next retry, then failed with why
    seen = [t for t in doomed.ticks if t.wall >= killed]
    reconnecting = next((t for t in seen if t.state == "reconnecting"), None)
    assert reconnecting is not None, [t.state for t in seen]
    assert re.search(r"reconnecting</b> to rtsp://127\.0\.0\.1:\d+/live \(attempt \d+, next retry in [\d.]+ s\) · \S",
                     reconnecting.source), reconnecting.source
    assert "failed</b> · gave up after 3 reconnect attempts:" in last_doomed.source, last_doomed.source
    # what it saw before dying is still in its memory and answerable
    text, times = answer_parts(doomed_answer)
    assert text and times and max(times) <= last_doomed.t_last, doomed_answer

    # the other seven: still streaming, further along, each answered in time with evidence
    for tab, t0, tick, (html, latency) in zip(others, at_kill, after, answers):
        assert tick.state == "streaming" and "lw-error" not in tick.source, tick.source
        assert tick.t_last >= t0 + ADVANCE_S
        text, times = answer_parts(html)
        assert "lw-error" not in html and text and text != "…", html
        assert times and latency < ANSWER_BOUND_S, (latency, html)
        assert not tab.errors, tab.errors
    assert not doomed.errors, doomed.errors
    assert page_status == 200 and not thread_crashes, thread_crashes
    # no handler, ingest worker or answer thread of the app logged a failure (they log before a message)
    assert not [r for r in caplog.records if r.name.startswith("longwatch.app")], caplog.text

    latencies = sorted(latency for _, latency in answers)
    refresh = max(x for t in tabs for x in t.took)
    print(f"\n{SESSIONS} sessions; {elapsed:.1f} s after the kill, encoded-up-to "
          + ", ".join(f"{t0:.0f}->{a.t_last:.0f} s (lag {a.lag:.1f})" for t0, a in zip(at_kill, after))
          + f"; answers {latencies[0]:.1f}-{latencies[-1]:.1f} s; dead camera: reconnecting "
          f"{reconnecting.wall - killed:.1f} s, failed by {last_doomed.wall - killed:.1f} s after the kill, "
          f"answered in {doomed_latency:.1f} s; slowest page refresh {refresh:.2f} s")
