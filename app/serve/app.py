"""The FastAPI app of `longwatch serve` on an already loaded Backbone: endpoints, limits, errors, optional UI."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI

from longwatch import __version__
from longwatch.app.config import Config
from longwatch.app.serve import routes_chat, routes_streams, routes_watches
from longwatch.app.serve.chat import ChatService
from longwatch.app.serve.errors import install_handlers
from longwatch.app.serve.manifest import Manifest
from longwatch.app.serve.registry import StreamRegistry
from longwatch.app.serve.security import BodyLimit, SourcePolicy
from longwatch.app.serve.state import ServeState
from longwatch.app.serve.watches import WatchManager
from longwatch.app.serve.webhook import Webhooks

log = logging.getLogger(__name__)
UI_PATH = "/ui"


def create_api(cfg: Config, backbone: Any, keys: frozenset[str] = frozenset(),
               ui_auth: tuple[str, str] | None = None) -> FastAPI:
    """The app for `cfg` (serve section: limits, policy; ui section when cfg.serve.ui) on `backbone`.

    Nothing is bound or launched; streams are freed when the app shuts down (its lifespan).
    """
    s = cfg.serve
    model_id = s.served_model_name or backbone.name
    manifest = Manifest(s.memory_dir) if s.memory_dir else None
    registry = StreamRegistry(backbone, s.max_streams, s.video_idle_s, batch=s.batch_streams, manifest=manifest)
    sources = SourcePolicy(tuple(s.allowed_schemes), tuple(s.allowed_source_hosts), s.allowed_local_media_path)
    watches = WatchManager(s.max_watches, Webhooks())
    watches.attach(registry)
    state = ServeState(cfg=cfg, backbone=backbone, model_id=model_id, registry=registry, sources=sources,
                       chat=ChatService(cfg, backbone, registry, sources, model_id), keys=keys,
                       executor=ThreadPoolExecutor(max_workers=s.max_pending, thread_name_prefix="serve-chat"),
                       created=int(time.time()), watches=watches)
    ui_manager: list[Any] = []
    for stream, entry in registry.restore():  # serve.memory_dir: the streams held before a restart
        routes_watches.restore_watches(state, stream, entry.watches)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        registry.start_reaper()
        watches.start()
        for manager in ui_manager:
            manager.start_reaper()
        try:
            yield
        finally:
            for manager in ui_manager:
                manager.close_all()
            watches.close()
            registry.close_all()
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="longwatch", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible chat over live video memory")
    app.state.longwatch = state
    install_handlers(app)
    app.add_middleware(BodyLimit, limit=s.max_request_kb * 1024)
    app.include_router(routes_chat.router)
    app.include_router(routes_streams.router)
    app.include_router(routes_watches.router)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Unauthenticated liveness: the model, how many streams are held, the batch encoder's counts and the
        batched answers' (decode forwards, tokens they decoded, most answers at once)."""
        enc, rows = registry.encoder, backbone.rows
        batching = {"steps": enc.steps, "patches": enc.patches, "largest": enc.largest} if enc else None
        answers = {"steps": rows.steps, "tokens": rows.batched_tokens, "largest": rows.rows_max}
        return {"status": "ok", "model": model_id, "streams": len(registry), "batching": batching,
                "answer_batching": answers}

    if s.ui:
        ui_manager.append(_mount_ui(app, cfg, backbone, ui_auth))
    return app


def _mount_ui(app: FastAPI, cfg: Config, backbone: Any, auth: tuple[str, str] | None) -> Any:
    """The Gradio page of `longwatch ui` at /ui, on the same model; returns its session manager."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline machines: no phoning home
    import gradio as gr

    from longwatch.app.ui.assets import CSS, HEAD
    from longwatch.app.ui.server import create_app

    demo, manager = create_app(cfg, backbone)
    gr.mount_gradio_app(app, demo, path=UI_PATH, auth=auth, show_error=False, ssr_mode=False, footer_links=[],
                        max_file_size=cfg.ui.max_upload_mb * 1_000_000, server_name=cfg.serve.host,
                        server_port=cfg.serve.port, css=CSS, head=HEAD)
    return manager
