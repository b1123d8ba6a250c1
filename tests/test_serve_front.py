"""The Ray front door's routing and failure handling, against stand-in workers (no Ray, no model): a worker that dies
mid-answer, one that is gone, events followed across a restart, video keys, Last-Event-ID, the CLI's one-line errors."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from longwatch.app.serve.front import _after, create_front, video_key
from tests.serve_fixtures import config, serve_app


def _worker_app(events: list[tuple[str, dict]], die_after_events: bool) -> FastAPI:
    """A stand-in worker: an answer streamed in two chunks then a dropped connection, a whole answer, events."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> object:
        if not body.get("stream"):
            return {"object": "chat.completion", "choices": [{"message": {"content": "ok"}}], "echo": body}

        async def chunks():
            yield b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
            yield b'data: {"choices": [{"delta": {"content": "b"}}]}\n\n'
            await asyncio.sleep(0.05)
            raise RuntimeError("the worker process died")  # uvicorn drops the connection mid-body

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.get("/v1/streams/{sid}/events")
    async def stream_events(sid: str) -> StreamingResponse:
        async def sse():
            for i, (kind, data) in enumerate(events, start=1):
                yield f"id: {i}\nevent: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
                await asyncio.sleep(0.02)
            if die_after_events:
                raise RuntimeError("killed")

        return StreamingResponse(sse(), media_type="text/event-stream")

    @app.get("/v1/streams/{sid}")
    async def get_stream(sid: str) -> dict:
        return {"id": sid}

    return app


@dataclass
class _Ref:
    index: int
    pid: int
    up: bool = True


@dataclass
class FakeCluster:
    """What Front uses of a Cluster; `urls` are the worker's successive addresses (a restart moves it)."""

    urls: list[str]
    key: str = "k"
    model: str = "tiny"
    routes: dict = field(default_factory=dict)
    videos: dict = field(default_factory=dict)
    downs: int = 0

    def __post_init__(self) -> None:
        self.workers = [_Ref(0, 100)]

    def __len__(self) -> int:
        return 1

    def url(self, index: int) -> str:
        if not self.workers[0].up and len(self.urls) > 1:
            self.urls.pop(0)
            self.workers[0] = _Ref(0, self.workers[0].pid + 1)
        return self.urls[0]

    def down(self, index: int) -> None:
        self.downs += 1
        self.workers[0].up = False

    def place(self, budget: int) -> int:
        return 0

    def any_worker(self) -> int:
        return 0

    def metrics(self) -> list:
        return []

    def close(self) -> None:
        pass


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_an_answer_cut_by_a_dying_worker_ends_with_a_retryable_error_event():
    with serve_app(_worker_app([], False)) as worker:
        cluster = FakeCluster([worker])
        with serve_app(create_front(config(), cluster)) as base:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=10) as r:
                lines = [line for line in r.iter_lines() if line.startswith("data: ")]
            assert lines[:2] == ['data: {"choices": [{"delta": {"content": "a"}}]}',
                                 'data: {"choices": [{"delta": {"content": "b"}}]}']
            error = json.loads(lines[2][6:])["error"]
            assert error["code"] == "worker_unavailable" and "retry" in error["message"]
            assert lines[3] == "data: [DONE]" and cluster.downs == 1
            # a whole answer is the worker's body as it is; the front door's key replaces the client's
            whole = httpx.post(f"{base}/v1/chat/completions", json={**body, "stream": False}, timeout=10)
            assert whole.status_code == 200 and whole.json()["echo"]["messages"] == body["messages"]


def test_a_gone_worker_is_503_with_retry_after_never_a_hang():
    cluster = FakeCluster([f"http://127.0.0.1:{_dead_port()}"])
    cluster.routes["stream-x"] = 0
    with serve_app(create_front(config(), cluster)) as base:
        for sid in ("stream-x", "stream-unknown"):  # its worker is gone / it may be on the gone worker
            t0 = time.monotonic()
            r = httpx.post(f"{base}/v1/chat/completions", timeout=20,
                           json={"model": "tiny", "messages": [], "stream_id": sid})
            assert r.status_code == 503 and r.headers["retry-after"] == "5" and time.monotonic() - t0 < 10
            assert r.json()["error"]["code"] == "worker_unavailable"


def test_events_follow_a_stream_across_its_worker_restart():
    first = [("connecting", {}), ("streaming", {})]
    second = [("restored", {"patches": 4}), ("connecting", {}), ("streaming", {}), ("ended", {})]
    with serve_app(_worker_app(first, True)) as old, serve_app(_worker_app(second, False)) as new:
        cluster = FakeCluster([old, new])
        cluster.routes["stream-a"] = 0
        with serve_app(create_front(config(), cluster)) as base:
            got = []
            with httpx.stream("GET", f"{base}/v1/streams/stream-a/events", timeout=20) as r:
                ident = None
                for line in r.iter_lines():
                    if line.startswith("id: "):
                        ident = line[4:]
                    elif line.startswith("data: "):
                        got.append((ident, json.loads(line[6:])["type"]))
    assert [k for _, k in got] == ["connecting", "streaming", "reconnecting", "restored", "connecting", "streaming",
                                   "ended"]
    assert got[0][0] == "w0.100.1" and got[3][0] == "w0.101.1"  # worker, its pid, the worker's own id


def test_video_keys_and_last_event_ids():
    part = {"type": "video_url", "video_url": {"url": "https://cam/x.mp4"}}
    body = {"messages": [{"role": "user", "content": [part, {"type": "text", "text": "q"}]}]}
    assert video_key(body, "rekv") == "rekv|url:https://cam/x.mp4"
    assert video_key({**body, "policy": "full"}, "rekv") == "full|url:https://cam/x.mp4"
    with_uuid = {"messages": [{"role": "user", "content": [{**part, "uuid": "v1"}]}]}
    assert video_key(with_uuid, "rekv") == "rekv|uuid:v1"
    assert video_key({"messages": [{"role": "user", "content": "text only"}]}, "rekv") is None
    assert _after("w0.100.17", 100) == 17 and _after("w0.99.17", 100) == 0 and _after("17", 100) == 0


def _serve(*flags: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "longwatch.app.cli", "serve", "--model", "tiny", "--port", str(_dead_port()), *flags],
                       capture_output=True, text=True, timeout=60, env=env)
    return r, time.monotonic() - t0


def test_an_unreachable_cluster_address_is_one_line_and_exit_2_within_15_s():
    r, took = _serve("--ray", f"127.0.0.1:{_dead_port()}")
    assert r.returncode == 2 and took < 15, (r.stderr, took)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no Ray cluster answers" in lines[0] and "ray start --head" in lines[0]


def test_without_ray_installed_the_flag_says_how_to_install_it(tmp_path):
    (tmp_path / "ray.py").write_text("raise ImportError('No module named ray')\n")  # shadows the installed ray
    import os

    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    r, _ = _serve("--ray", env=env)
    assert r.returncode == 2 and 'pip install "longwatch[ray]"' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_front_door_health_lists_workers():
    cluster = FakeCluster(["http://127.0.0.1:1"])
    with serve_app(create_front(config(), cluster)) as base:
        assert httpx.get(f"{base}/health").json() == {"status": "ok", "model": "tiny", "workers": 1, "up": 1}
    assert threading.active_count() >= 1
