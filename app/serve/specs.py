"""A stream's settings from a request: the server's config with the request's choices, checked and capped.

A request may lower the server's memory budgets, never raise them, and may not ask for more than
serve.max_fps; every refusal is an APIError 400 naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from longwatch.app.config import Config
from longwatch.app.schema import format_bytes, parse_bytes, replace
from longwatch.app.serve.errors import APIError
from longwatch.app.serve.schemas import StreamCreate
from longwatch.ingest.config import IngestConfig
from longwatch.ingest.uri import redact
from longwatch.memory.config import POLICIES, MemoryConfig


@dataclass(frozen=True)
class StreamSpec:
    """Everything needed to start one stream; `source` may hold credentials, `display` never does."""

    source: str
    origin: str
    """api (POST /v1/streams) or chat (a video a chat completion named)."""
    ingest: IngestConfig
    memory: MemoryConfig
    name: str | None = None
    key: str | None = None
    """Chat videos: what a later request names to reuse this memory (policy + uuid or URL)."""

    @property
    def display(self) -> str:
        return redact(self.source)


def policy_of(name: str | None, cfg: Config, param: str = "policy") -> str:
    """The memory policy a request names (default: the server's); APIError 400 for an unknown one."""
    if name is None:
        return cfg.memory.policy
    if name not in POLICIES:
        raise APIError(400, f"unknown policy {name!r} (choose from {', '.join(POLICIES)})", "invalid_policy", param)
    return name


def _replace(obj: Any, changes: dict[str, Any], section: str) -> Any:
    """`obj` with a request's `changes`, validated as the config's own values are (eval/validate.py)."""
    try:
        return replace(obj, changes)
    except ValueError as e:
        field = str(e).split(":", 1)[0]
        raise APIError(400, f"{e}", f"invalid_{section}", field) from None


def _budget(value: str | int | None, cap: int, name: str) -> int | None:
    if value is None:
        return None
    try:
        n = parse_bytes(value)
    except ValueError as e:
        raise APIError(400, f"{name}: {e}", "invalid_memory", name) from None
    if n > cap:
        raise APIError(400, f"{name}: {format_bytes(n)} is over the server's {format_bytes(cap)} "
                       f"(memory.{name}); ask for less", "invalid_memory", name)
    return n


def stream_spec(body: StreamCreate, source: str, cfg: Config) -> StreamSpec:
    """The spec of a stream created through POST /v1/streams."""
    if body.fps is not None and body.fps > cfg.serve.max_fps:
        raise APIError(400, f"fps: {body.fps:g} is over the server's limit {cfg.serve.max_fps:g} (serve.max_fps)",
                       "invalid_ingest", "fps")
    ingest_changes = {k: v for k, v in (("fps", body.fps), ("frame_size", body.frame_size)) if v is not None}
    ingest = _replace(cfg.ingest, ingest_changes, "ingest")
    memory_changes: dict[str, Any] = {"policy": policy_of(body.policy, cfg)}
    for name in ("device_budget", "host_budget", "disk_budget"):
        n = _budget(getattr(body, name), getattr(cfg.memory, name), name)
        if n is not None:
            memory_changes[name] = n
    for name in ("window_blocks", "retrieve_blocks"):
        if getattr(body, name) is not None:
            memory_changes[name] = getattr(body, name)
    memory = _replace(cfg.memory, memory_changes, "memory")
    return StreamSpec(source=source, origin="api", ingest=ingest, memory=memory, name=body.name)


def video_spec(source: str, key: str, policy: str, cfg: Config, local: bool) -> StreamSpec:
    """The spec of a video a chat completion names: the server's settings, files decoded unpaced."""
    ingest = dataclasses.replace(cfg.ingest, realtime=False) if local else cfg.ingest
    memory = _replace(cfg.memory, {"policy": policy}, "memory")
    return StreamSpec(source=source, origin="chat", ingest=ingest, memory=memory, key=key)
