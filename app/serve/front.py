"""The front door of `longwatch serve --ray`: the same HTTP API, each request forwarded to the worker that holds its stream.

A stream (POST /v1/streams) is placed on the worker with the most room (Cluster.place) and stays there;
a chat video sticks to the worker that first encoded it (by its key: policy and uuid or URL); requests
about a stream go to its worker. A worker that Ray is restarting answers nothing: a request for it gets
503 with Retry-After, an answer being streamed gets an error event, and an events subscription gets a
`reconnecting` event, then whatever the restarted worker publishes once it reopened the stream
(`restored`, `connecting`, `streaming`). Event ids are `w<worker>.<pid>.<id>`, so Last-Event-ID works
across restarts. Every body is the worker's own, byte for byte, but GET /v1/streams (the workers' lists
joined, each stream with its `worker`) and GET /v1/workers (the front door's own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from longwatch import __version__
from longwatch.app.config import Config
from longwatch.app.schema import parse_bytes
from longwatch.app.serve.cluster import Cluster, WorkerDown, connect
from longwatch.app.serve.errors import APIError, install_handlers
from longwatch.app.serve.security import BodyLimit, check_bearer
from longwatch.app.serve.server import ServeError, address_of, api_keys, bind, run_uvicorn, url_of

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5
PASS_HEADERS = ("content-type", "accept", "last-event-id")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def unavailable(index: int, what: str = "") -> APIError:
    return APIError(503, f"worker {index} is not answering{what}: Ray is restarting it and its streams reopen from "
                    f"their journals; retry in a few seconds", "worker_unavailable",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


class Front:
    """Routing and forwarding over one Cluster (see the module docstring)."""

    def __init__(self, cfg: Config, cluster: Cluster) -> None:
        self.cfg, self.cluster = cfg, cluster
        timeout = httpx.Timeout(cfg.serve.request_timeout_s + 30, connect=5.0)
        self.http = httpx.AsyncClient(timeout=timeout, headers={"Authorization": f"Bearer {cluster.key}"})

    async def url(self, index: int) -> str:
        try:
            return await anyio.to_thread.run_sync(self.cluster.url, index)
        except WorkerDown:
            raise unavailable(index) from None

    async def open(self, index: int, method: str, path: str, request: Request | None = None,
                   body: bytes | None = None) -> httpx.Response:
        """Send a request to worker `index`, response not read yet (the caller closes it); 503 when it is down."""
        base = await self.url(index)
        headers = {k: v for k, v in (request.headers.items() if request else []) if k.lower() in PASS_HEADERS}
        query = request.url.query if request else ""
        req = self.http.build_request(method, f"{base}{path}" + (f"?{query}" if query else ""), content=body,
                                      headers=headers)
        try:
            return await self.http.send(req, stream=True)
        except httpx.TransportError:
            self.cluster.down(index)
            raise unavailable(index) from None

    async def forward(self, index: int, request: Request, path: str, body: bytes | None = None) -> Response:
        """The worker's answer to `request` as it is: whole, or relayed as server-sent events."""
        r = await self.open(index, request.method, path, request, body if body is not None else await request.body())
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(self._relay(index, r), status_code=r.status_code, media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        try:
            content = await r.aread()
        except httpx.TransportError:
            self.cluster.down(index)
            raise unavailable(index, " (it stopped while answering)") from None
        finally:
            await r.aclose()
        return Response(content, status_code=r.status_code, media_type=r.headers.get("content-type"),
                        headers={k: v for k, v in r.headers.items() if k.lower() == "retry-after"})

    async def _relay(self, index: int, r: httpx.Response) -> AsyncIterator[bytes]:
        """An answer streamed by the worker; if the worker dies mid-answer, an OpenAI error event, then [DONE]."""
        try:
            async for chunk in r.aiter_raw():
                yield chunk
        except httpx.TransportError:
            self.cluster.down(index)
            err = unavailable(index, " (it stopped while answering)")
            yield f"data: {json.dumps(err.body())}\n\ndata: [DONE]\n\n".encode()
        finally:
            await r.aclose()

    # ---- streams -----------------------------------------------------------------------------------

    async def owner(self, stream_id: str) -> int:
        """The worker holding `stream_id`; asks the workers when the front door does not know it; 404 if none."""
        known = self.cluster.routes.get(stream_id)
        if known is not None:
            return known
        silent = []
        for w in self.cluster.workers:
            try:
                r = await self.open(w.index, "GET", f"/v1/streams/{stream_id}")
            except APIError:
                silent.append(w.index)
                continue
            await r.aclose()
            if r.status_code == 200:
                self.cluster.routes[stream_id] = w.index
                return w.index
        if silent:  # it may be on a worker that is restarting
            raise unavailable(silent[0], f" and may hold stream {stream_id!r}")
        raise APIError(404, f"no stream {stream_id!r} (GET /v1/streams lists them)", "stream_not_found", "stream_id")

    async def events(self, index: int, stream_id: str, last: str | None) -> AsyncIterator[str]:
        """The stream's events from its worker, followed across the worker's restarts (module docstring)."""
        yield "retry: 2000\n\n"
        after, pid, waited_since = _after(last, self.cluster.workers[index].pid), None, None
        own = 0
        while True:
            terminal = False
            try:
                base = await self.url(index)
                pid = self.cluster.workers[index].pid
                headers = {"Last-Event-ID": str(after)} if after else {}
                async with self.http.stream("GET", f"{base}/v1/streams/{stream_id}/events", headers=headers,
                                            timeout=httpx.Timeout(None, connect=5.0)) as r:
                    if r.status_code == 404:
                        yield _event(f"w{index}.front.{own}", "failed", stream_id,
                                     reason=f"worker {index} restarted without this stream (its journal is gone)")
                        return
                    waited_since = None
                    kind = None
                    async for line in r.aiter_lines():
                        if line.startswith("id: "):
                            after = int(line[4:])
                            line = f"id: w{index}.{pid}.{after}"
                        elif line.startswith("event: "):
                            kind = line[7:]
                            terminal = kind in ("ended", "failed")
                        elif line.startswith("retry:"):
                            continue
                        yield line + "\n"
                if terminal:
                    return
            except (APIError, httpx.TransportError):
                self.cluster.down(index)
            # the worker went away without ending the stream: Ray restarts it, and it reopens the stream
            if waited_since is None:
                waited_since = time.monotonic()
                own += 1
                after = 0
                yield _event(f"w{index}.front.{own}", "reconnecting", stream_id,
                             reason=f"worker {index} stopped; Ray is restarting it")
            elif time.monotonic() - waited_since > self.cfg.serve.ray_connect_timeout_s * 8:
                yield _event(f"w{index}.front.{own + 1}", "failed", stream_id, reason=f"worker {index} did not come back")
                return
            await anyio.sleep(1.0)


def _after(last: str | None, pid: int) -> int:
    """A client's Last-Event-ID as the worker's own id: only when it names this worker process."""
    parts = (last or "").split(".")
    return int(parts[2]) if len(parts) == 3 and parts[1] == str(pid) and parts[2].isdigit() else 0


def _event(ident: str, kind: str, stream_id: str, **data: Any) -> str:
    body = {"id": ident, "type": kind, "stream_id": stream_id, "at": round(time.time(), 3), **data}
    return f"id: {ident}\nevent: {kind}\ndata: {json.dumps(body)}\n\n"


def video_key(body: dict[str, Any], default_policy: str) -> str | None:
    """The key a worker files a chat video under (app/serve/chat.py): policy and the first video's uuid or URL."""
    policy = body.get("policy") or default_policy
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "video_url":
                video = part.get("video_url") or {}
                uuid = part.get("uuid") or video.get("uuid")
                if uuid:
                    return f"{policy}|uuid:{uuid}"
                if video.get("url"):
                    return f"{policy}|url:{video['url']}"
    return None


def create_front(cfg: Config, cluster: Cluster, keys: frozenset[str] = frozenset()) -> FastAPI:
    """The front door's app over `cluster` (started); the cluster is closed when the app shuts down."""
    front = Front(cfg, cluster)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await front.http.aclose()
            await anyio.to_thread.run_sync(cluster.close)

    def require_key(request: Request) -> None:
        check_bearer(request.headers.get("authorization"), keys)

    app = FastAPI(title="longwatch (Ray front door)", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible chat over live video memory, on Ray workers")
    app.state.front = front
    install_handlers(app)
    app.add_middleware(BodyLimit, limit=cfg.serve.max_request_kb * 1024)
    auth = [Depends(require_key)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        up = sum(w.up for w in cluster.workers)
        return {"status": "ok" if up else "degraded", "model": cluster.model, "workers": len(cluster), "up": up}

    @app.get("/v1/workers", dependencies=auth)
    async def workers() -> dict[str, Any]:
        """Per worker: state, pid, node, restarts, streams with lag and tiers, slots, device budget, memory."""
        return {"object": "list", "data": await anyio.to_thread.run_sync(cluster.metrics)}

    @app.get("/v1/models", dependencies=auth)
    async def models(request: Request) -> Response:
        return await front.forward(cluster.any_worker(), request, "/v1/models")

    @app.post("/v1/streams", dependencies=auth)
    async def create_stream(request: Request) -> Response:
        raw, body = await _json_body(request)
        budget = _bytes(body.get("device_budget"), cfg.memory.device_budget)
        index = await anyio.to_thread.run_sync(cluster.place, budget)
        response = await front.forward(index, request, "/v1/streams", raw)
        if response.status_code == 201:
            cluster.routes[json.loads(response.body)["id"]] = index
        return response

    @app.get("/v1/streams", dependencies=auth)
    async def list_streams() -> JSONResponse:
        data, missing = [], []
        for w in cluster.workers:
            try:
                r = await front.open(w.index, "GET", "/v1/streams")
                listed = json.loads(await r.aread())
                await r.aclose()
            except (APIError, httpx.TransportError, ValueError):
                missing.append(w.index)
                continue
            for s in listed.get("data", []):
                cluster.routes[s["id"]] = w.index
                data.append({**s, "worker": w.index})
        return JSONResponse({"object": "list", "data": data, "unavailable_workers": missing})

    @app.get("/v1/streams/{stream_id}/events", dependencies=auth)
    async def stream_events(stream_id: str, request: Request) -> StreamingResponse:
        index = await front.owner(stream_id)
        return StreamingResponse(front.events(index, stream_id, request.headers.get("last-event-id")),
                                 media_type="text/event-stream", headers=SSE_HEADERS)

    @app.api_route("/v1/streams/{stream_id}", methods=["GET", "DELETE"], dependencies=auth)
    @app.api_route("/v1/streams/{stream_id}/{rest:path}", methods=["GET", "POST", "DELETE"], dependencies=auth)
    async def stream_path(stream_id: str, request: Request, rest: str = "") -> Response:
        index = await front.owner(stream_id)
        response = await front.forward(index, request, request.url.path)
        if request.method == "DELETE" and not rest and response.status_code == 200:
            cluster.routes.pop(stream_id, None)
        return response

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(request: Request) -> Response:
        raw, body = await _json_body(request)
        if isinstance(body.get("stream_id"), str):
            index = await front.owner(body["stream_id"])
        elif (key := video_key(body, cfg.memory.policy)) is not None:
            index = cluster.videos.get(key)
            if index is None:
                index = await anyio.to_thread.run_sync(cluster.place, cfg.memory.device_budget)
                cluster.videos[key] = index
        else:
            index = cluster.any_worker()
        return await front.forward(index, request, "/v1/chat/completions", raw)

    return app


async def _json_body(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The body as sent (forwarded unchanged) and as a JSON object for routing ({} when it is not one: the
    worker then names what is wrong); 400 when it is not JSON at all."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise APIError(400, "the body is not JSON", "invalid_request") from None
    return raw, body if isinstance(body, dict) else {}


def _bytes(value: Any, default: int) -> int:
    try:
        return parse_bytes(value) if value is not None else default
    except (TypeError, ValueError):
        return default  # the worker names the bad value (400)


def serve_ray(cfg: Config) -> None:
    """`longwatch serve --ray`: this process is the front door (no model here), Ray worker actors hold the
    models and streams (app/serve/cluster.py). Without serve.memory_dir the streams journal in a folder of
    this run, enough to survive a worker crash on one machine; a multi-node cluster needs shared storage."""
    s = cfg.serve
    if s.ui:
        raise ServeError("--ui does not combine with --ray yet: the page holds its sessions in one process "
                         "(run `longwatch ui` beside the cluster)")
    address_of(s.host, s.port)
    keys = api_keys(cfg)
    sock = bind(s.host, s.port)
    scratch = None
    try:
        ray, owned = connect(cfg)
        if not s.memory_dir:
            scratch = tempfile.TemporaryDirectory(prefix="longwatch-ray-memory-")
            cfg = dataclasses.replace(cfg, serve=dataclasses.replace(s, memory_dir=scratch.name))
            if not owned:
                log.warning("no --memory-dir: streams journal under %s on this machine only; a worker restarted "
                            "on another node cannot reopen them (give a folder every node can reach)", scratch.name)
        log.info("starting Ray workers for %s", cfg.model.name)
        cluster = Cluster(cfg, ray, owned)
        app = create_front(cfg, cluster, keys)
        print(f"longwatch serve: {url_of(s.host, s.port)}/v1 (model {s.served_model_name or cluster.model} on "
              f"{len(cluster)} Ray workers; {'API key required' if keys else 'no API key'})", flush=True)
        run_uvicorn(app, sock)
    finally:
        sock.close()
        if scratch is not None:
            scratch.cleanup()
