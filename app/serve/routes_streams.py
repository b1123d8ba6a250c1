"""Live streams as resources: POST/GET/DELETE /v1/streams and GET /v1/streams/{id}/events (server-sent events).

Questions about a stream go through POST /v1/chat/completions with `stream_id`. The events endpoint
replays what the stream's bus kept (after Last-Event-ID when the client sends one), then follows it live,
with a comment line every PING_S so proxies keep the connection; it ends after `ended` or `failed`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from longwatch.app.serve.events import Subscription
from longwatch.app.serve.schemas import Deleted, StreamCreate, StreamInfo, StreamList
from longwatch.app.serve.specs import stream_spec
from longwatch.app.serve.state import require_key, state_of

router = APIRouter(prefix="/v1/streams", dependencies=[Depends(require_key)])
PING_S = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("", status_code=201, response_model=StreamInfo)
def create_stream(body: StreamCreate, request: Request) -> StreamInfo:
    """Start decoding `source` into a memory of its own; 201 with the stream, 429 when the server is full."""
    st = state_of(request)
    source = st.sources.check(body.source, "source")
    stream = st.registry.create(stream_spec(body, source, st.cfg))
    return stream.info()


@router.get("", response_model=StreamList)
def list_streams(request: Request) -> StreamList:
    return StreamList(data=[s.info() for s in state_of(request).registry.list()])


@router.get("/{stream_id}", response_model=StreamInfo)
def get_stream(stream_id: str, request: Request) -> StreamInfo:
    return state_of(request).registry.get(stream_id, param="id").info()


@router.delete("/{stream_id}", response_model=Deleted)
def delete_stream(stream_id: str, request: Request) -> Deleted:
    """Stop decoding and free the stream's memory (after an answer in progress on it)."""
    state_of(request).registry.delete(stream_id)
    return Deleted(id=stream_id)


@router.get("/{stream_id}/events")
async def stream_events(stream_id: str, request: Request,
                        last_event_id: str | None = Header(None, alias="Last-Event-ID")) -> StreamingResponse:
    stream = await anyio.to_thread.run_sync(state_of(request).registry.get, stream_id, "id")
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return StreamingResponse(_events(stream.bus.subscribe(after)), media_type="text/event-stream",
                             headers=SSE_HEADERS)


async def _events(sub: Subscription) -> AsyncIterator[str]:
    try:
        yield "retry: 2000\n\n"
        while True:
            try:
                event = await sub.next(PING_S)
            except TimeoutError:
                yield ": ping\n\n"
                continue
            if event is None:
                break
            yield f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(event.as_dict())}\n\n"
    finally:
        sub.close()
