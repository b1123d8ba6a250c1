"""What every endpoint of one server shares: config, model, streams, watches, chat service, key set, thread pool."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from longwatch.app.config import Config
from longwatch.app.serve.chat import ChatService
from longwatch.app.serve.registry import StreamRegistry
from longwatch.app.serve.security import SourcePolicy, check_bearer
from longwatch.app.serve.watches import WatchManager


@dataclass
class ServeState:
    cfg: Config
    backbone: Any
    model_id: str
    registry: StreamRegistry
    sources: SourcePolicy
    chat: ChatService
    keys: frozenset[str]
    executor: ThreadPoolExecutor
    """Runs chat completions (each waits for its video and the model on one of these threads)."""
    created: int
    watches: WatchManager


def state_of(request: Request) -> ServeState:
    return request.app.state.longwatch


def require_key(request: Request) -> None:
    """The dependency of every /v1 endpoint: a known API key when the server has any (APIError 401)."""
    check_bearer(request.headers.get("authorization"), state_of(request).keys)
