"""A live camera as a resource: a real GStreamer RTSP server on loopback, POST /v1/streams, events over SSE,
questions through the openai client with stream_id, the camera killed and restarted, then DELETE.

Two streams run side by side; killing one camera and deleting its stream never stops the other.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.ingest_fixtures import RtspServer, make_video, require_rtsp
from tests.serve_fixtures import backbone, client, config, live_server

pytestmark = pytest.mark.rtsp

CFG = config(**{"ingest.open_timeout_s": 3.0, "ingest.read_timeout_s": 1.5, "ingest.reconnect_initial_s": 0.25,
                "ingest.reconnect_max_s": 1.0, "serve.request_timeout_s": 30})


class Events:
    """GET /v1/streams/{id}/events read on a thread: every SSE event as (name, id, data)."""

    def __init__(self, url: str, last_id: int | None = None) -> None:
        self.url, self.items, self.comments = url, [], []
        self.done = threading.Event()
        headers = {"Last-Event-ID": str(last_id)} if last_id else {}
        self.thread = threading.Thread(target=self._read, args=(headers,), daemon=True)
        self.thread.start()

    def _read(self, headers: dict) -> None:
        name, ident = None, None
        with httpx.stream("GET", self.url, headers=headers, timeout=httpx.Timeout(60, read=60)) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("id: "):
                    ident = int(line[4:])
                elif line.startswith("data: "):
                    self.items.append((name, ident, json.loads(line[6:])))
                elif line.startswith(":") or line.startswith("retry:"):
                    self.comments.append(line)
        self.done.set()

    def names(self) -> list[str]:
        return [n for n, _, _ in self.items]

    def wait_for(self, name: str, timeout: float, after: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n, ident, data in list(self.items):
                if n == name and ident > after:
                    return data
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} event after id {after} within {timeout} s: {self.names()}")


def _wait_encoded(base: str, sid: str, patches: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = httpx.get(f"{base}/v1/streams/{sid}").json()
        if info["patches"] >= patches:
            return info
        time.sleep(0.2)
    raise AssertionError(f"stream {sid} did not reach {patches} patches: {info}")


def test_live_stream_resource_events_questions_and_delete(tmp_path):
    require_rtsp()
    clip = make_video(tmp_path / "live.mp4", seconds=60, fps=15, size=(96, 128), gop=15)
    with RtspServer(clip) as cam_a, RtspServer(clip) as cam_b, live_server(CFG, backbone()) as base:
        url_a = cam_a.url.replace("rtsp://", "rtsp://viewer:s3cret@")
        r = httpx.post(f"{base}/v1/streams", json={"source": url_a, "name": "door", "fps": 2, "frame_size": "64",
                                                   "policy": "sliding", "device_budget": "64MB"})
        assert r.status_code == 201, r.text
        a = r.json()
        assert a["source"] == cam_a.url.replace("rtsp://", "rtsp://***@") and "s3cret" not in r.text
        assert a["policy"] == "sliding" and a["live"] and a["origin"] == "api" and a["name"] == "door"
        b = httpx.post(f"{base}/v1/streams", json={"source": cam_b.url}).json()
        events = Events(f"{base}/v1/streams/{a['id']}/events")
        events.wait_for("streaming", 20)
        assert events.names()[:2] == ["connecting", "streaming"] and events.comments[0] == "retry: 2000"
        info = _wait_encoded(base, a["id"], 3)
        assert info["state"] == "streaming" and info["encoded_up_to"] >= 3 and info["lag_s"] >= 0
        assert set(info["memory"]) == {"device", "host", "disk"} and info["memory"]["device"]["budget"] == 64_000_000
        assert {s["id"] for s in httpx.get(f"{base}/v1/streams").json()["data"]} == {a["id"], b["id"]}

        c = client(base)
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "What is happening now?"}],
                                      max_tokens=4, extra_body={"stream_id": a["id"]})
        lw = r.model_extra["longwatch"]
        assert lw["stream_id"] == a["id"] and lw["policy"] == "sliding" and lw["patches"] >= 3
        parts = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "And now?"}],
                                               max_tokens=3, stream=True, extra_body={"stream_id": a["id"]}))
        assert parts[-1].choices[0].finish_reason and parts[-1].model_extra["longwatch"]["stream_id"] == a["id"]
        # a camera URL named in a chat completion becomes a stream of its own (origin chat), kept for the next one
        live = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": cam_b.url}},
                                             {"type": "text", "text": "What is happening?"}]}]
        first = c.chat.completions.create(model="tiny", messages=live, max_tokens=2).model_extra["longwatch"]
        second = c.chat.completions.create(model="tiny", messages=live, max_tokens=2).model_extra["longwatch"]
        assert first["stream_id"] not in (a["id"], b["id"]) and second["stream_id"] == first["stream_id"]
        assert first["patches"] >= 1 and second["reused_memory"]
        at = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "At 00:02?"}],
                                       max_tokens=2, extra_body={"stream_id": a["id"], "until": 2.0})
        assert all(e["t_start"] < 2.0 for e in at.model_extra["longwatch"]["evidence"])

        last = events.items[-1][1]
        cam_a.kill()  # the camera loses power: reconnecting, then back with a gap
        events.wait_for("reconnecting", 15, after=last)
        time.sleep(1.0)
        cam_a.start()
        events.wait_for("streaming", 20, after=last)
        gap = events.wait_for("gap", 20, after=last)
        assert gap["gap_s"] > 0.5
        # a late subscriber with Last-Event-ID gets only what came after it
        late = Events(f"{base}/v1/streams/{a['id']}/events", last_id=last)
        late.wait_for("reconnecting", 10)
        assert all(ident > last for _, ident, _ in late.items)
        before_b = httpx.get(f"{base}/v1/streams/{b['id']}").json()["patches"]

        assert httpx.delete(f"{base}/v1/streams/{a['id']}").json()["deleted"]
        assert events.wait_for("ended", 10)["reason"] == "deleted"
        assert events.done.wait(10) and late.done.wait(10)  # the event streams end with the stream
        assert httpx.get(f"{base}/v1/streams/{a['id']}").status_code == 404
        r = httpx.post(f"{base}/v1/chat/completions", json={"model": "tiny", "stream_id": a["id"],
                                                             "messages": [{"role": "user", "content": "q"}]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "stream_not_found"

        info_b = _wait_encoded(base, b["id"], before_b + 2)  # the other camera went on all along
        assert info_b["state"] == "streaming" and info_b["reconnects"] == 0
