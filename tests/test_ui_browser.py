"""The UI in a real browser (Debian's Chromium via Playwright) against `longwatch demo` on a loopback port.

Upload, play, ask, a streamed answer, seek links, Stop, the memory panel; the camera URL tab against a
real RTSP server; the browser webcam (Chromium's fake camera); two tabs at once; the session limit.
Screenshots of each step go to test-artifacts/ui/.
"""

from __future__ import annotations

import re

import psutil
import pytest

from longwatch.eval.sample_video import make_sample_video
from tests.ingest_fixtures import RtspServer, free_port, make_video, require_rtsp
from tests.ui_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FAKE_CAMERA_ARGS,
    Server,
    ask,
    patches,
    player_time,
    require_browser,
    shot,
    state,
    wait_for,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def playwright():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, playwright):
    # the random-weights tiny preset: these tests check the machinery, not the answers
    server = Server("demo", "demo", "--model", "tiny", cache=tmp_path_factory.mktemp("cache"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def upload_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("upload") / "street.mp4"
    make_sample_video(path, seconds=20, size=(240, 320), fps=10)
    return str(path)


def open_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(url)
    # the page's load event opens the session (and starts the demo's sample): wait for it
    wait_for(lambda: page.locator("#lw-source .lw-box").count() > 0, 60, "the page to open its session")
    return context, page


def test_upload_play_ask_then_seek_from_the_answer(browser, demo, upload_video):
    context, page = open_page(browser, demo.url)
    try:
        page.wait_for_selector("#lw-player video")
        wait_for(lambda: state(page) == "ended" and patches(page) == 40, 60, "the preloaded sample in memory")
        assert "random weights" in page.inner_text("#lw-banner")
        page.click("#lw-player button[aria-label='Clear']")
        wait_for(lambda: "empty" in page.inner_text("#lw-memory"), 10, "the memory panel to empty")
        page.set_input_files("#lw-player input[type=file]", upload_video)
        wait_for(lambda: state(page) == "ended" and patches(page) == 20, 60, "the upload in memory")
        assert "street.mp4 is in memory: 20 patches" in page.inner_text("#lw-source")
        shot(page, "01-uploaded")

        page.evaluate("() => document.querySelector('#lw-player video').play()")
        wait_for(lambda: player_time(page) > 1.5, 20, "the video to play")
        wait_for(lambda: float(page.get_attribute("#lw-now", "data-now") or 0) > 1.0, 10, '"now" to follow playback')
        assert "play position" in page.inner_text("#lw-now-box")
        shot(page, "02-playing")

        # the user scrubs to the second sign and asks about it: "now" is the play position
        page.evaluate("() => { const v = document.querySelector('#lw-player video'); v.pause(); v.currentTime = 12.6; }")
        wait_for(lambda: "00:12" in page.inner_text("#lw-now-box"), 10, '"now" to follow the scrub')
        lengths = ask(page, "What did the sign say at 00:12?")
        assert len({n for n in lengths if n > 1}) >= 3, f"answer did not stream: {lengths}"
        answer = page.locator("#lw-chat [data-testid=bot]").last
        assert answer.locator(".lw-ev img").count() >= 3
        assert "asked at 00:12 · play position" in page.locator("#lw-chat [data-testid=user]").last.inner_text()
        named = answer.locator(".lw-ev-time")  # blocks memory fetched because the question names 00:12
        assert named.count() >= 1 and re.search(r"00:1[12]–00:1[23]", named.first.inner_text())
        named.first.scroll_into_view_if_needed()
        shot(page, "03-answered")

        # evidence only reaches up to the play position (later blocks are hidden): seek to the earliest
        link = answer.locator(".lw-ev a.lw-seek[href^='#t=']").first
        target = float(link.get_attribute("href")[3:])
        assert target < 12.6 - 2
        link.click()
        assert abs(player_time(page) - target) < 0.5
        page.locator("#lw-chat [data-testid=user] a.lw-seek[href='#t=12.00']").last.click()
        assert 12.0 <= player_time(page) < 12.5
        shot(page, "04-seeked")

        # Stop, clicked the moment it shows: the answer ends marked stopped, Stop goes, the next question runs
        page.fill("#lw-question textarea", "Describe every second of the video.")
        page.evaluate("""() => new Promise((done) => {
            const obs = new MutationObserver(() => {
                const stop = document.querySelector('#lw-stop');
                if (stop && stop.offsetParent) { obs.disconnect(); stop.click(); done(); }
            });
            obs.observe(document.body, {subtree: true, childList: true, attributes: true});
            document.querySelector('#lw-ask').click();
        })""")
        wait_for(lambda: page.locator("#lw-chat .lw-stopped").count() == 1, 20, "the answer marked stopped")
        wait_for(lambda: not page.locator("#lw-stop").is_visible(), 10, "Stop to go")
        shot(page, "05-stopped")
        ask(page, "And now?")
        assert page.locator("#lw-chat .lw-stopped").count() == 1 and page.locator("#lw-ask").is_visible()
    except Exception:
        shot(page, "FAILED-upload")
        raise
    finally:
        context.close()


@pytest.mark.slow  # ~12 s; the camera tab's endpoint (/connect) with live RTSP cameras is in the default run (test_ui_concurrent)
def test_camera_url_tab_shows_states_and_answers_at_the_live_edge(browser, demo, tmp_path):
    require_rtsp()
    clip = make_video(tmp_path / "live.mp4", seconds=60, fps=15, size=(120, 160), gop=15)
    context, page = open_page(browser, demo.url)
    try:
        with RtspServer(clip) as rtsp:
            page.get_by_role("tab", name="Camera URL").click()
            for bad, needle in (("file:///etc/passwd", "file:// is not allowed"), ("/etc/passwd", "not a URL")):
                page.fill("#lw-url textarea, #lw-url input", bad)
                page.click("#lw-connect")
                wait_for(lambda needle=needle: needle in page.inner_text("#lw-source"), 20, f"the refusal of {bad}")
            shot(page, "10-url-refused")
            page.fill("#lw-url textarea, #lw-url input", f"rtsp://127.0.0.1:{free_port()}/live")  # nobody listens
            page.click("#lw-connect")
            wait_for(lambda: state(page) == "failed", 20, "the unreachable camera to fail")
            assert "connection refused" in page.inner_text("#lw-source")
            shot(page, "10-url-unreachable")
            page.fill("#lw-url textarea, #lw-url input", rtsp.url.replace("rtsp://", "rtsp://viewer:s3cret@"))
            page.click("#lw-connect")
            seen: list[str] = []

            def streaming() -> bool:
                s = state(page)
                if s and (not seen or seen[-1] != s):
                    seen.append(s)
                # the sample may still be streaming from disk when we connect: count only what follows
                return "connecting" in seen and s == "streaming" and patches(page) >= 3

            wait_for(streaming, 30, "the RTSP stream in memory")
            assert "streaming" in seen[seen.index("connecting"):], seen
            assert "s3cret" not in page.content() and "rtsp://***@127.0.0.1" in page.inner_text("#lw-source")
            assert "lag behind live" in page.inner_text("#lw-memory")
            shot(page, "11-url-streaming")
            ask(page, "What is on screen now?")
            assert "live edge" in page.inner_text("#lw-now-box")
            assert "live edge" in page.locator("#lw-chat [data-testid=user]").last.inner_text()
            shot(page, "12-url-answered")
            rtsp.kill()
            wait_for(lambda: state(page) == "reconnecting", 20, "the reconnecting state")
            assert re.search(r"attempt \d+, next retry in \d", page.inner_text("#lw-source"))
            shot(page, "13-url-reconnecting")
    except Exception:
        shot(page, "FAILED-url")
        raise
    finally:
        context.close()


@pytest.mark.slow  # ~21 s; sessions' isolation is in the default run through gradio_client (test_ui_concurrent, test_ui_sessions)
def test_two_tabs_at_once_keep_their_own_video_memory_and_chat(browser, demo, upload_video):
    (ctx_a, a), (ctx_b, b) = open_page(browser, demo.url), open_page(browser, demo.url)
    try:
        for page in (a, b):
            wait_for(lambda page=page: state(page) == "ended" and patches(page) == 40, 60, "the sample in memory")
        a.click("#lw-player button[aria-label='Clear']")
        a.set_input_files("#lw-player input[type=file]", upload_video)
        wait_for(lambda: state(a) == "ended" and patches(a) == 20, 60, "tab A's upload in memory")
        a.fill("#lw-question textarea", "Question from tab A?")
        b.fill("#lw-question textarea", "Question from tab B?")
        a.click("#lw-ask")
        b.click("#lw-ask")  # both answer at once on the shared model
        for page in (a, b):
            wait_for(lambda page=page: page.locator("#lw-chat .lw-foot").count() == 1, 60, "both answers")
        assert patches(a) == 20 and patches(b) == 40
        assert "tab A" in a.inner_text("#lw-chat") and "tab B" not in a.inner_text("#lw-chat")
        assert "tab B" in b.inner_text("#lw-chat") and "tab A" not in b.inner_text("#lw-chat")
        shot(a, "20-tab-a")
        shot(b, "21-tab-b")
        closed_before = demo.log().count(" closed")
        ctx_a.close()  # closing the tab frees its session on the server
        wait_for(lambda: demo.log().count(" closed") > closed_before, 30, "the server to free tab A's session")
        ask(b, "Still here?")
        assert b.locator("#lw-chat .lw-foot").count() == 2 and patches(b) == 40
    finally:
        for ctx in (ctx_a, ctx_b):
            ctx.close()


def test_browser_webcam_frames_stream_into_memory(playwright, demo):
    cam_browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + FAKE_CAMERA_ARGS)
    context = cam_browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        page.goto(demo.url)
        wait_for(lambda: state(page) is not None, 30, "the page")
        page.get_by_role("tab", name="Webcam").click()
        page.click("#lw-cam [title='grant webcam access'] button")
        page.locator("#lw-cam button", has_text="Record").first.click()
        wait_for(lambda: "browser webcam" in page.inner_text("#lw-source") and state(page) == "streaming"
                 and patches(page) >= 3, 30, "webcam patches in memory")  # not the sample's patches
        ask(page, "What do you see?")
        assert "live edge" in page.inner_text("#lw-now-box")
        shot(page, "30-webcam")
    except Exception:
        shot(page, "FAILED-webcam")
        raise
    finally:
        context.close()
        cam_browser.close()


@pytest.mark.slow  # ~16 s, a server of its own; the limits' messages are unit-tested (test_ui_sessions, test_ui_validate)
def test_session_limit_and_upload_limit_are_messages_and_the_server_binds_loopback(browser, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 1_500_000)
    server = Server("limit", "ui", "--model", "tiny", "--max-sessions", "1", "--max-upload-mb", "1",
                    cache=tmp_path).wait_ready()
    (ctx_a, a), (ctx_b, b) = (None, None), (None, None)
    try:
        listening = [c.laddr for c in psutil.Process(server.proc.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
        ctx_a, a = open_page(browser, server.url)
        wait_for(lambda: "No source yet" in a.inner_text("#lw-source"), 30, "the first tab's session")
        a.set_input_files("#lw-player input[type=file]", str(big))  # Gradio refuses it while uploading
        wait_for(lambda: "exceed the maximum allowed size" in a.inner_text("body"), 20, "the upload limit message")
        shot(a, "41-upload-limit")
        ctx_b, b = open_page(browser, server.url)
        wait_for(lambda: "already serves 1 session," in b.inner_text("#lw-source"), 30, "the limit message")
        shot(b, "40-session-limit")
    finally:
        for ctx in (ctx_a, ctx_b):
            if ctx is not None:
                ctx.close()
        server.stop()
