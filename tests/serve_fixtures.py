"""Helpers for the serve tests: one tiny backbone per process, a real uvicorn server on a loopback port."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from longwatch.app.config import Config, load_config
from longwatch.app.serve.app import create_api
from longwatch.app.serve.server import bind

BASE_OVERRIDES = {"ingest.frame_size": "64", "memory.window_blocks": 4, "memory.retrieve_blocks": 2,
                  "memory.time_blocks": 2, "model.max_new_tokens": 8, "serve.allowed_source_hosts": "127.0.0.1"}
"""Small frames and short answers: a 6 s clip is encoded in about a second on two shared cores."""


def config(**overrides: Any) -> Config:
    return load_config(None, {**BASE_OVERRIDES, **overrides})


@functools.cache
def backbone(name: str = "tiny") -> Any:
    from longwatch.backbone.config import ModelConfig
    from longwatch.backbone.model import Backbone

    return Backbone.load(ModelConfig(name=name, device="cpu", max_new_tokens=8))


@contextlib.contextmanager
def live_server(cfg: Config, bb: Any, keys: frozenset[str] = frozenset()) -> Iterator[str]:
    """Serve create_api(cfg, bb, keys) with uvicorn on a free loopback port; yields the base URL (no /v1)."""
    with serve_app(create_api(cfg, bb, keys)) as base:
        yield base


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an app made by create_api (a test may read its app.state) on a free loopback port; yields the URL."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def client(base: str, key: str = "none") -> Any:
    """The official openai client against `base`, without retries (a 429 must reach the test)."""
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def video_part(url: str, uuid: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "video_url", "video_url": {"url": url}}
    if uuid:
        part["uuid"] = uuid
    return part


def ask_messages(question: str, url: str | None = None, uuid: str | None = None) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [video_part(url, uuid)] if url or uuid else []
    if not url and uuid:
        content = [{"type": "video_url", "video_url": {}, "uuid": uuid}]
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]
