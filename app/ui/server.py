"""Load the model once, build the page and serve it: what `longwatch ui` and `longwatch demo` run."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

log = logging.getLogger(__name__)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'user:pass' -> ('user', 'pass'); ValueError for anything else (the password may hold ':')."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must be USER:PASSWORD")
    return user, password


def create_app(cfg: Any, backbone: Any, preload: str | None = None, banner: str | None = None) -> tuple[Any, Any]:
    """(gr.Blocks, SessionManager) for `cfg` on an already loaded Backbone; nothing is launched."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline machines: no phoning home
    from longwatch.app.ui.events import Handlers
    from longwatch.app.ui.layout import build
    from longwatch.app.ui.reasoning import is_thinking_model
    from longwatch.app.ui.sessions import Session, SessionManager
    from longwatch.memory.multistream import BatchEncoder

    ui = cfg.ui
    encoder = BatchEncoder(name="ui-encoder")  # every session's patches, batched; lives as long as the app
    manager = SessionManager(lambda key: Session(key, backbone, cfg, encoder=encoder), ui.max_sessions,
                             ui.idle_timeout_s)
    handlers = Handlers(manager, ui.max_upload_mb, tuple(ui.allowed_schemes), preload,
                        thinking_model=is_thinking_model(backbone.name), webcam_time_limit_s=ui.webcam_time_limit_s)
    demo = build(handlers, fps=cfg.ingest.fps, max_sessions=ui.max_sessions,
                 webcam_time_limit_s=ui.webcam_time_limit_s, banner=banner)
    # every session's refresh, answer and upload may run at once; the model lock orders model calls, one
    # forward at a time (answers token by token), so no session's camera waits for another's whole answer
    demo.queue(default_concurrency_limit=2 * ui.max_sessions)
    return demo, manager


def serve(cfg: Any, auth: tuple[str, str] | None = None, preload: str | None = None,
          banner: str | None = None) -> None:
    """Load cfg.model, then serve the UI until interrupted (binds cfg.ui.server_name, loopback by default)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from longwatch.app.cli import warn_if_random_weights
    from longwatch.backbone.model import Backbone

    check_port(cfg.ui.server_name, cfg.ui.server_port)  # fail in a second, not after loading a model
    warn_if_random_weights(cfg.model.name)
    log.info("loading model %s", cfg.model.name)
    backbone = Backbone.load(cfg.model)
    demo, manager = create_app(cfg, backbone, preload, banner)
    manager.start_reaper()
    ui = cfg.ui
    try:
        _launch(demo, ui, auth)
    finally:
        manager.close_all()


class ServeError(RuntimeError):
    """The server could not start (port taken, address not local); printed as one line."""

    user_facing = True


def check_port(host: str, port: int) -> None:
    """ServeError unless `host:port` can be bound now (the same SO_REUSEADDR test uvicorn passes)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServeError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


def _launch(demo: Any, ui: Any, auth: tuple[str, str] | None) -> None:
    from longwatch.app.ui.assets import CSS, HEAD

    try:
        demo.launch(server_name=ui.server_name, server_port=ui.server_port, share=ui.share, auth=auth,
                    max_file_size=ui.max_upload_mb * 1_000_000, show_error=False, ssr_mode=False,
                    css=CSS, head=HEAD, footer_links=[])
    except OSError as e:  # Gradio reports a taken port or a bad address as OSError
        raise ServeError(f"cannot serve on {ui.server_name}:{ui.server_port}: {e}") from None
