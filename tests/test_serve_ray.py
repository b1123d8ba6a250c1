"""`longwatch serve --ray`: a local Ray cluster on 127.0.0.1 (usage stats off, real worker processes), two workers
with the tiny preset behind the front door; answers token-identical to one process, placement, 429, a SIGKILLed
worker restarted with its journal and its live camera (a real GStreamer RTSP server)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import threading
import time

import httpx
import pytest

from tests.ingest_fixtures import RtspServer, make_video, require_rtsp
from tests.serve_fixtures import ask_messages, backbone, client, config, live_server, serve_app

# not imported here: `--ray auto` sets how Ray binds before ray is imported (cluster.connect)
pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(240),
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="needs the ray extra: pip install 'longwatch[ray]'")]

OVERRIDES = {"ingest.open_timeout_s": 3.0, "ingest.read_timeout_s": 1.5, "ingest.reconnect_initial_s": 0.25,
             "ingest.reconnect_max_s": 1.0, "serve.request_timeout_s": 30, "serve.max_streams": 1,
             "memory.policy": "rekv"}


class Events:
    """The front door's GET /v1/streams/{id}/events read on a thread: (event name, id, data)."""

    def __init__(self, url: str) -> None:
        self.items: list[tuple[str, str, dict]] = []
        self.thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self.thread.start()

    def _read(self, url: str) -> None:
        name = ident = None
        with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", url, timeout=httpx.Timeout(120)) as r:
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("id: "):
                    ident = line[4:]
                elif line.startswith("data: "):
                    self.items.append((name, ident, json.loads(line[6:])))

    def names(self) -> list[str]:
        return [n for n, _, _ in self.items]

    def wait_for(self, names: list[str], timeout: float) -> None:
        """Until `names` appear in this order (others may come between)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = iter(self.names())
            if all(any(n == want for n in seen) for want in names):
                return
            time.sleep(0.1)
        raise AssertionError(f"events {names} not seen in order within {timeout} s: {self.names()}")


def _until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(what)


def test_two_workers_route_refuse_and_survive_a_killed_worker(tmp_path):
    require_rtsp()
    from longwatch.app.serve.cluster import Cluster, connect
    from longwatch.app.serve.front import create_front

    media = tmp_path / "media"
    media.mkdir()
    clip = make_video(media / "clip.mp4", seconds=6, size=(64, 64))
    camera = make_video(tmp_path / "live.mp4", seconds=120, fps=15, size=(96, 128), gop=15)
    cfg = config(**OVERRIDES, **{"serve.allowed_local_media_path": str(media), "serve.ray": "auto",
                                 "serve.ray_workers": 2, "serve.memory_dir": str(tmp_path / "memory")})
    question = ask_messages("What is shown?", clip.as_uri())

    # the same greedy answer in one process, on the same preset
    with live_server(config(**OVERRIDES, **{"serve.allowed_local_media_path": str(media)}), backbone()) as single:
        alone = client(single).chat.completions.create(model="tiny", messages=question, max_tokens=8)

    ray, owned = connect(cfg)
    assert ray.is_initialized() and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    cluster = Cluster(cfg, ray, owned)
    assert all(w.url.startswith("http://127.0.0.1:") for w in cluster.workers)
    pids = {w.pid for w in cluster.workers}
    assert len(pids) == 2 and os.getpid() not in pids  # real worker processes
    with RtspServer(camera) as cam, serve_app(create_front(cfg, cluster)) as base:
        c = client(base)
        via_ray = c.chat.completions.create(model="tiny", messages=question, max_tokens=8)
        assert via_ray.choices[0].message.content == alone.choices[0].message.content
        assert via_ray.usage.completion_tokens == alone.usage.completion_tokens
        chat_worker = cluster.videos[next(iter(cluster.videos))]

        # placement: the live camera goes to the worker with a free slot, the file stream to the other one
        # (its idle chat video is freed), a third stream finds no room: 429 naming the limit
        live = httpx.post(f"{base}/v1/streams", json={"source": cam.url, "policy": "rekv"}).json()
        assert cluster.routes[live["id"]] != chat_worker
        filed = httpx.post(f"{base}/v1/streams", json={"source": clip.as_uri()}).json()
        assert cluster.routes[filed["id"]] == chat_worker
        full = httpx.post(f"{base}/v1/streams", json={"source": clip.as_uri()})
        assert full.status_code == 429 and "serve.max_streams" in full.json()["error"]["message"]
        listed = {s["id"]: s["worker"] for s in httpx.get(f"{base}/v1/streams").json()["data"]}
        assert listed == {live["id"]: cluster.routes[live["id"]], filed["id"]: chat_worker}
        # isolated: each question is answered by its own stream's memory on its own worker
        for sid, patches in ((filed["id"], 6), (live["id"], 1)):
            _until(lambda s=sid, n=patches: httpx.get(f"{base}/v1/streams/{s}").json()["patches"] >= n, 30,
                   f"{sid} not encoded")
            r = c.chat.completions.create(model="tiny", messages=ask_messages("What now?"), max_tokens=2,
                                          extra_body={"stream_id": sid})
            assert r.model_extra["longwatch"]["stream_id"] == sid

        # kill the camera's worker: Ray restarts it, the stream reopens its journal and the camera again
        events = Events(f"{base}/v1/streams/{live['id']}/events")
        before = _until(lambda: (i := httpx.get(f"{base}/v1/streams/{live['id']}").json())["patches"] >= 4 and i,
                        30, "the live stream did not reach 4 patches")
        metrics = httpx.get(f"{base}/v1/workers").json()["data"]
        victim = next(m for m in metrics if m["index"] == cluster.routes[live["id"]])
        assert [s["id"] for s in victim["streams"]] == [live["id"]] and victim["rss"] > 0
        killed_at = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        down = httpx.get(f"{base}/v1/streams/{live['id']}")
        assert down.status_code == 503 and down.headers["retry-after"] and down.json()["error"]["code"] == \
            "worker_unavailable"
        events.wait_for(["streaming", "reconnecting", "restored", "streaming"], 90)
        restored = next(d for n, _, d in events.items if n == "restored")
        back = [d["at"] for n, _, d in events.items if n == "streaming"][-1]
        print(f"killed worker {victim['index']}: restored after {restored['at'] - killed_at:.1f} s, streaming after "
              f"{back - killed_at:.1f} s ({restored['patches']} patches reopened)")  # the README's figure (-s)
        assert restored["patches"] >= before["patches"] and restored["encoded_up_to"] >= before["encoded_up_to"]
        after = _until(lambda: (i := httpx.get(f"{base}/v1/streams/{live['id']}").json())["encoded_up_to"]
                       > before["encoded_up_to"] + 2 and i, 30, "the camera did not resume")
        assert after["state"] == "streaming"
        gap = next(d for n, _, d in events.items if n == "gap")  # the time the worker was down
        assert gap["t_start"] >= before["encoded_up_to"] and gap["gap_s"] > 0
        # the blocks from before the crash still answer
        r = c.chat.completions.create(model="tiny", messages=ask_messages("What was shown?"), max_tokens=2,
                                      extra_body={"stream_id": live["id"], "until": before["encoded_up_to"]})
        evidence = r.model_extra["longwatch"]["evidence"]
        assert evidence and all(e["t_start"] < before["encoded_up_to"] for e in evidence)
        workers = httpx.get(f"{base}/v1/workers").json()["data"]
        again = next(m for m in workers if m["index"] == victim["index"])
        assert again["state"] == "running" and again["pid"] != victim["pid"] and again["restarts"] == 1
        other = next(m for m in workers if m["index"] != victim["index"])
        assert [s["id"] for s in other["streams"]] == [filed["id"]]  # the other worker never noticed
