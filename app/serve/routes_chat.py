"""GET /v1/models and POST /v1/chat/completions, whole or as server-sent events the openai client parses.

A completion runs on the server's chat thread pool; this side only moves its pieces. Until the model is
taken (the video encoded far enough, the model free) every failure is a plain 4xx response; once it
streams, a failure comes as a `data: {"error": ...}` event, which the openai client raises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from longwatch.app.serve.chat import Outcome, Plan
from longwatch.app.serve.errors import APIError
from longwatch.app.serve.schemas import (AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Choice,
                                         ChunkChoice, Delta, ModelCard, ModelList, Usage)
from longwatch.app.serve.state import ServeState, require_key, state_of
from longwatch.app.serve.textflow import Piece, join

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/models", response_model=ModelList, response_model_exclude_none=True)
def models(request: Request) -> ModelList:
    st = state_of(request)
    return ModelList(data=[ModelCard(id=st.model_id, created=st.created)])


class _Run:
    """One completion on a pool thread; its events ("start", "piece", "done", "error") arrive on `queue`."""

    def __init__(self, st: ServeState, plan: Plan) -> None:
        self.st, self.plan = st, plan
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = False
        self.pieces: list[Piece] = []
        st.executor.submit(self._work)

    def _put(self, kind: str, value: Any = None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    def _work(self) -> None:
        try:
            out = self.st.chat.run(self.plan, lambda p: self._put("piece", p), lambda: self.cancelled,
                                   lambda: self._put("start"))
            self._put("done", out)
        except APIError as e:
            self._put("error", e)
        except Exception as e:  # a model failure: this request fails, the server and other streams go on
            log.exception("chat completion failed")
            self._put("error", APIError(500, f"the model failed: {type(e).__name__}", "internal_error"))
        finally:
            self.st.chat.leave()

    async def next(self) -> tuple[str, Any]:
        return await self.queue.get()


def _usage(out: Outcome) -> Usage:
    a = out.answer
    prompt = a.question_tokens + a.context_tokens
    return Usage(prompt_tokens=prompt, completion_tokens=len(a.token_ids), total_tokens=prompt + len(a.token_ids))


def _sse(obj: BaseModel | dict[str, Any]) -> str:
    """One server-sent event exactly as OpenAI frames them: `data: {json}` and a blank line."""
    text = obj.model_dump_json(exclude_none=True) if isinstance(obj, BaseModel) else json.dumps(obj)
    return f"data: {text}\n\n"


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request) -> ChatCompletion | StreamingResponse:
    st = state_of(request)
    st.chat.admit()
    try:
        plan = await anyio.to_thread.run_sync(st.chat.plan, body)
    except BaseException:
        st.chat.leave()
        raise
    run = _Run(st, plan)  # from here the run's thread calls leave()
    ident, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    try:
        kind, value = await run.next()
        if kind == "error":
            raise value
        if body.stream:
            return StreamingResponse(_stream(run, body, ident, created), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        while kind != "done":
            kind, value = await run.next()
            if kind == "piece":
                run.pieces.append(value)
            elif kind == "error":
                raise value
    except BaseException:
        run.cancelled = True
        raise
    out: Outcome = value
    message = AssistantMessage(content=join(run.pieces, "content") or ("" if not st.chat.reasoning else None),
                               reasoning_content=join(run.pieces, "reasoning"))
    return ChatCompletion(id=ident, created=created, model=st.model_id,
                          choices=[Choice(message=message, finish_reason=out.finish_reason)],  # type: ignore[arg-type]
                          usage=_usage(out), longwatch=st.chat.longwatch_fields(plan, out))


async def _stream(run: _Run, body: ChatRequest, ident: str, created: int) -> AsyncIterator[str]:
    st = run.st

    def chunk(delta: Delta, finish: str | None = None, **extra: Any) -> ChatChunk:
        return ChatChunk(id=ident, created=created, model=st.model_id,
                         choices=[ChunkChoice(delta=delta, finish_reason=finish)], **extra)  # type: ignore[arg-type]

    try:
        yield _sse(chunk(Delta(role="assistant", content="")))
        while True:
            kind, value = await run.next()
            if kind == "piece":
                delta = Delta(content=value.text) if value.kind == "content" else Delta(reasoning_content=value.text)
                yield _sse(chunk(delta))
            elif kind == "error":
                yield _sse(value.body())
                break
            elif kind == "done":
                out: Outcome = value
                yield _sse(chunk(Delta(), out.finish_reason, longwatch=st.chat.longwatch_fields(run.plan, out)))
                if body.stream_options and body.stream_options.include_usage:
                    yield _sse(ChatChunk(id=ident, created=created, model=st.model_id, choices=[], usage=_usage(out)))
                break
        yield "data: [DONE]\n\n"
    finally:
        run.cancelled = True  # the client went away: stop decoding
