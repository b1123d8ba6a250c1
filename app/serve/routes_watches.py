"""Watches as resources under a stream: POST/GET/DELETE /v1/streams/{id}/watches[/{watch_id}].

A watch fires a `watch` event on GET /v1/streams/{id}/events (and POSTs it to its webhook); the checking
itself is watches.py's, off the request path.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request

from longwatch.app.serve.errors import APIError
from longwatch.app.serve.schemas import WatchCreate, WatchDeleted, WatchInfo, WatchList
from longwatch.app.serve.registry import Stream
from longwatch.app.serve.state import ServeState, require_key, state_of
from longwatch.app.serve.webhook import check_webhook
from longwatch.memory.watch import Watch

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/streams/{stream_id}/watches", dependencies=[Depends(require_key)])


def _watch(body: WatchCreate) -> Watch:
    hysteresis = body.hysteresis if body.hysteresis is not None else min(0.2, body.threshold / 2)
    try:
        return Watch(body.condition.strip(), interval_s=body.interval_s, threshold=body.threshold,
                     hysteresis=hysteresis)
    except ValueError as e:
        param = next((p for p in ("condition", "interval_s", "hysteresis", "threshold") if p in str(e)), None)
        raise APIError(400, str(e), "invalid_watch", param) from None


@router.post("", status_code=201, response_model=WatchInfo)
def create_watch(stream_id: str, body: WatchCreate, request: Request) -> WatchInfo:
    """Check `condition` on the stream's newest patches every `interval_s`; 201 with the watch."""
    st = state_of(request)
    stream = st.registry.get(stream_id, param="stream_id")
    watch = _watch(body)
    webhook = check_webhook(body.webhook, st.sources) if body.webhook is not None else None
    if not stream.worker.running:
        raise APIError(409, f"the stream {stream_id} has {stream.info().state}: no patch will come to check",
                       "stream_not_running", "stream_id")
    served = st.watches.create(stream, watch, webhook)
    if st.registry.manifest is not None and stream.spec.origin == "api":
        st.registry.manifest.watch(stream_id, served.id, body.model_dump(exclude_none=True))
    return served.info()


def restore_watches(st: ServeState, stream: Stream, requests: tuple[dict[str, Any], ...]) -> None:
    """Reopen the watches the manifest lists for a reopened stream, with their ids (a bad one is logged)."""
    for request in requests:
        try:
            body = WatchCreate(**{k: v for k, v in request.items() if k != "watch"})
            webhook = check_webhook(body.webhook, st.sources) if body.webhook is not None else None
            st.watches.create(stream, _watch(body), webhook, request["watch"])
        except (APIError, ValueError) as e:
            log.warning("watch %s of %s not reopened: %s", request.get("watch"), stream.id, e)


@router.get("", response_model=WatchList)
def list_watches(stream_id: str, request: Request) -> WatchList:
    st = state_of(request)
    st.registry.get(stream_id, param="stream_id")
    return WatchList(data=[w.info() for w in st.watches.list(stream_id)])


@router.get("/{watch_id}", response_model=WatchInfo)
def get_watch(stream_id: str, watch_id: str, request: Request) -> WatchInfo:
    st = state_of(request)
    st.registry.get(stream_id, param="stream_id")
    return st.watches.get(stream_id, watch_id).info()


@router.delete("/{watch_id}", response_model=WatchDeleted)
def delete_watch(stream_id: str, watch_id: str, request: Request) -> WatchDeleted:
    st = state_of(request)
    st.registry.get(stream_id, param="stream_id")
    st.watches.delete(stream_id, watch_id)
    if st.registry.manifest is not None:
        st.registry.manifest.unwatch(stream_id, watch_id)
    return WatchDeleted(id=watch_id)
