"""Watches over HTTP ("tell me when"): the mechanics, since the tiny preset's random weights say nothing of accuracy.

A file played at wall-clock pace (ingest.realtime) stands in for a camera: one patch a second. A watch with a
threshold near 0 fires once (one rising edge) and shows up on SSE and at its webhook with the evidence times
and a JPEG of the frame; one near 1 never fires while its checks grow one per interval; DELETE stops the
checks; bad bodies, refused webhook hosts and the cap are 4xx. The checker's edge and failure logic is also
driven directly, with a scripted memory, for what random weights cannot show (a second edge, a failing watch).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import cv2
import httpx
import numpy as np
import pytest

from longwatch.app.serve.app import create_api
from longwatch.app.serve.events import EventBus
from longwatch.app.serve.watches import WatchManager
from longwatch.app.serve.webhook import Webhooks
from longwatch.ingest import TemporalPatch
from longwatch.memory.engine import Evidence, YesNo
from longwatch.memory.watch import Watch
from tests.ingest_fixtures import make_video
from tests.serve_fixtures import backbone, config, serve_app

NEVER = 0.999999
"""P(Yes) a random model does not reach (a logit gap of 14)."""
ANY = 1e-6


@contextlib.contextmanager
def hook_server() -> Iterator[tuple[str, list[dict]]]:
    """A webhook receiver on 127.0.0.1: /ok answers 204, /fail 500; yields (base URL, bodies received at /ok)."""
    got: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/ok":
                got.append(body)
            self.send_response(204 if self.path == "/ok" else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()


class Events:
    """GET /v1/streams/{id}/events read on a thread: every SSE event's data, by type."""

    def __init__(self, url: str) -> None:
        self.items: list[tuple[str, dict]] = []
        threading.Thread(target=self._read, args=(url,), daemon=True).start()

    def _read(self, url: str) -> None:
        name = None
        with httpx.stream("GET", url, timeout=None) as r:
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    self.items.append((name, json.loads(line[6:])))

    def of(self, kind: str) -> list[dict]:
        return [d for n, d in list(self.items) if n == kind]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and "Traceback" not in r.text
    if code:
        assert err["code"] == code, err
    return err


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    make_video(root / "long.mp4", seconds=16, size=(64, 64))
    make_video(root / "short.mp4", seconds=1, size=(64, 64))
    cfg = config(**{"serve.allowed_local_media_path": str(root), "ingest.realtime": True, "serve.max_watches": 4})
    app = create_api(cfg, backbone())
    with serve_app(app) as base:
        yield base, app, root


def test_watches_fire_on_rising_edges_count_checks_and_stop_when_deleted(served):
    base, app, root = served
    api = f"{base}/v1/streams"
    with hook_server() as (hooks, received):
        short = httpx.post(api, json={"source": (root / "short.mp4").as_uri()}).json()
        sid = httpx.post(api, json={"source": (root / "long.mp4").as_uri()}).json()["id"]
        events = Events(f"{api}/{sid}/events")
        watches = f"{api}/{sid}/watches"
        r = httpx.post(watches, json={"condition": "Is a red square on screen?", "threshold": ANY,
                                      "webhook": f"{hooks}/ok"})
        assert r.status_code == 201, r.text
        anything = r.json()
        assert anything["object"] == "watch" and anything["state"] == "active" and anything["checks"] == 0
        never = httpx.post(watches, json={"condition": "Is it raining?", "interval_s": 2, "threshold": NEVER}).json()
        gone = httpx.post(watches, json={"condition": "Is a door open?", "threshold": NEVER}).json()
        failing = httpx.post(watches, json={"condition": "Is anyone there?", "threshold": ANY,
                                            "webhook": f"{hooks}/fail"}).json()
        err = _error(httpx.post(watches, json={"condition": "One more?"}), 429, "watch_limit_reached")
        assert "serve.max_watches" in err["message"] and "4" in err["message"]
        assert [w["id"] for w in httpx.get(watches).json()["data"]] == [anything["id"], never["id"], gone["id"],
                                                                         failing["id"]]

        # DELETE stops a watch: no check after it (one already running may finish)
        held = app.state.longwatch.watches.get(sid, gone["id"])
        _wait(lambda: httpx.get(f"{watches}/{gone['id']}").json()["checks"] >= 2, 15, "two checks")
        assert httpx.delete(f"{watches}/{gone['id']}").json() == {"id": gone["id"], "object": "watch.deleted",
                                                                  "deleted": True}
        stopped_at = held.watch.checks
        _error(httpx.get(f"{watches}/{gone['id']}"), 404, "watch_not_found")
        _error(httpx.delete(f"{watches}/{gone['id']}"), 404, "watch_not_found")

        # the never-firing watch: about one check per interval_s (2 s) of stream time
        first = _wait(lambda: (w := httpx.get(f"{watches}/{never['id']}").json())["checks"] >= 1 and w, 10, "a check")
        later = _wait(lambda: (w := httpx.get(f"{watches}/{never['id']}").json())["last_checked_t"]
                      >= first["last_checked_t"] + 6 and w, 15, "6 s more")
        span = later["last_checked_t"] - first["last_checked_t"]
        assert abs((later["checks"] - first["checks"]) - span / 2) <= 1, (first, later)
        assert later["fired"] == 0 and 0 <= later["last_p_yes"] < NEVER and later["last_checked_at"] > 0
        assert held.watch.checks <= stopped_at + 1

        # the watch that answers yes to anything: one rising edge, one event, however many checks
        now = httpx.get(f"{watches}/{anything['id']}").json()
        assert now["fired"] == 1 and now["checks"] >= 5 and now["last_fired_t"] is not None
        fired = [e for e in events.of("watch") if e["watch_id"] == anything["id"]]
        assert len(fired) == 1
        ev = fired[0]
        assert ev["condition"] == "Is a red square on screen?" and ev["stream_id"] == sid
        assert ev["t"] == now["last_fired_t"] == ev["evidence"]["t_end"] and ev["p_yes"] >= ANY
        frame = ev["frame"]
        assert (frame["t_start"], frame["t_end"]) == (ev["evidence"]["t_start"], ev["evidence"]["t_end"])
        assert frame["t_start"] < frame["t"] < frame["t_end"]
        head, b64 = frame["image_url"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        image = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (64, 64, 3)

        # the webhook got the same JSON as the event stream; a failing one is counted, never raised
        _wait(lambda: received, 5, "the webhook")
        assert received == [ev] and now["webhook_sent"] == 1 and now["webhook_failures"] == 0
        bad = _wait(lambda: (w := httpx.get(f"{watches}/{failing['id']}").json())["webhook_failures"] and w, 5,
                    "the failed delivery")
        assert bad["webhook_error"] == "HTTP 500" and bad["webhook_sent"] == 0 and bad["state"] == "active"
        assert httpx.get(f"{api}/{sid}").json()["state"] == "streaming"

        # a stream that has ended gets no new patch to check: 409
        _wait(lambda: httpx.get(f"{api}/{short['id']}").json()["state"] == "ended", 10, "the short clip to end")
        time.sleep(0.5)
        _error(httpx.post(f"{api}/{short['id']}/watches", json={"condition": "Anything?"}), 409, "stream_not_running")

        # deleting the stream takes its watches with it
        httpx.delete(f"{api}/{sid}")
        _error(httpx.get(watches), 404, "stream_not_found")
        assert not app.state.longwatch.watches.list(sid)


BAD_BODIES = [
    ({}, 400, "invalid_request"),
    ({"condition": ""}, 400, "invalid_request"),
    ({"condition": "   "}, 400, "invalid_watch"),
    ({"condition": "x" * 301}, 400, "invalid_request"),
    ({"condition": "Is it?", "threshold": 0}, 400, "invalid_request"),
    ({"condition": "Is it?", "threshold": 1}, 400, "invalid_request"),
    ({"condition": "Is it?", "interval_s": 0}, 400, "invalid_request"),
    ({"condition": "Is it?", "interval_s": "soon"}, 400, "invalid_request"),
    ({"condition": "Is it?", "threshold": 0.3, "hysteresis": 0.3}, 400, "invalid_watch"),
    ({"condition": "Is it?", "every": 2}, 400, "invalid_request"),
    ({"condition": "Is it?", "webhook": "ftp://127.0.0.1/hook"}, 400, "invalid_webhook"),
    ({"condition": "Is it?", "webhook": "file:///etc/passwd"}, 400, "invalid_webhook"),
    ({"condition": "Is it?", "webhook": "not a url"}, 400, "invalid_webhook"),
    ({"condition": "Is it?", "webhook": "http://10.1.2.3/hook"}, 403, "source_host_not_allowed"),
    ({"condition": "Is it?", "webhook": "http://169.254.169.254/latest/meta-data"}, 403, "source_host_not_allowed"),
    ({"condition": "Is it?", "webhook": "http://[::ffff:192.168.0.1]/hook"}, 403, "source_host_not_allowed"),
]


@pytest.fixture(scope="module")
def a_stream(served):
    base, _, root = served
    sid = httpx.post(f"{base}/v1/streams", json={"source": (root / "long.mp4").as_uri()}).json()["id"]
    yield f"{base}/v1/streams/{sid}/watches"
    httpx.delete(f"{base}/v1/streams/{sid}")


@pytest.mark.parametrize("body,status,code", BAD_BODIES)
def test_bad_bodies_and_refused_webhooks_are_openai_errors(a_stream, body, status, code):
    err = _error(httpx.post(a_stream, json=body), status, code)
    if status == 403:
        assert "--allowed-source-hosts" in err["message"] and err["param"] == "webhook"
    assert httpx.get(a_stream).json()["data"] == []  # nothing was made


def test_unknown_stream_and_broken_json(served, a_stream):
    base, _, _ = served
    _error(httpx.post(f"{base}/v1/streams/stream-nope/watches", json={"condition": "Is it?"}), 404,
           "stream_not_found")
    _error(httpx.get(f"{base}/v1/streams/stream-nope/watches/watch-x"), 404, "stream_not_found")
    _error(httpx.post(a_stream, content=b"{not json", headers={"content-type": "application/json"}), 400,
           "invalid_request")


# ---- the checker's logic, with a scripted memory -------------------------------------------------

class ScriptedMemory:
    """stats() and yes_no() of a MemoryStream: P(Yes) per condition from a script, one value per patch."""

    def __init__(self, script: dict[str, list[float]]) -> None:
        self.script, self.t = script, 0.0

    def stats(self) -> dict:
        return {"t_last": self.t}

    def yes_no(self, condition: str) -> YesNo:
        if condition == "boom":
            raise RuntimeError("the model broke")
        p = self.script[condition][int(self.t) - 1]
        return YesNo(p, 0.0, 0.0, self.t, Evidence(int(self.t), self.t - 1, self.t, "window"))


def test_checker_fires_per_rising_edge_and_one_failure_hurts_nobody():
    memory = ScriptedMemory({"edge": [0.9, 0.9, 0.1, 0.9, 0.95, 0.6, 0.2, 0.8], "quiet": [0.1] * 8})
    closing = threading.Event()
    stream = SimpleNamespace(id="stream-x", bus=EventBus("stream-x"), worker=SimpleNamespace(memory=memory),
                             closing=closing, add_patch_listener=lambda f: None)
    manager = WatchManager(4, Webhooks(1.0))
    edge = manager.create(stream, Watch("edge", threshold=0.5, hysteresis=0.2), None)
    boom = manager.create(stream, Watch("boom"), None)
    quiet = manager.create(stream, Watch("quiet", interval_s=2), None)
    for i in range(8):
        memory.t = i + 1.0
        frames = np.full((2, 32, 32, 3), 10 * i, np.uint8)
        manager.on_patch(stream, TemporalPatch(i, frames, (i + 0.0, i + 0.5), i + 0.0, i + 1.0))
        manager.check_stream(stream)
    fired = [e.data for e in stream.bus.history() if e.type == "watch"]
    # 0.9 fires; 0.1 re-arms; 0.9 fires; 0.6 is not below 0.5 - 0.2 (stays disarmed); 0.2 re-arms; 0.8 fires
    assert [e["t"] for e in fired] == [1.0, 4.0, 8.0] and {e["watch_id"] for e in fired} == {edge.id}
    assert [e["frame"]["t"] for e in fired] == [0.5, 3.5, 7.5] and [e["fired"] for e in fired] == [1, 2, 3]
    assert edge.info().checks == 8 and edge.info().fired == 3
    info = boom.info()
    assert info.state == "failed" and info.reason == "RuntimeError: the model broke" and info.checks == 0
    assert quiet.info().checks == 4 and quiet.info().state == "active"
    closing.set()  # a stream being freed: checks stop without marking anything failed
    memory.t = 9.0
    manager.check_stream(stream)
    assert edge.info().checks == 8 and edge.info().state == "active"
    manager.close()
