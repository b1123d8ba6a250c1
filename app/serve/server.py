"""Bind, load the model once, print where it serves, run uvicorn: what `longwatch serve` does.

The socket is bound before the model loads, so a taken port or a bad address fails in a second (one
line, exit 2), and it stays ours until uvicorn serves on it (no other process can take it in between).
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from typing import Any

from longwatch.app.config import Config
from longwatch.app.serve.security import KEYS_ENV, is_loopback, load_api_keys

log = logging.getLogger(__name__)


class ServeError(RuntimeError):
    """The server cannot start (address, port, keys); printed as one line, exit status 2."""

    user_facing = True


def address_of(host: str, port: int) -> tuple[Any, ...]:
    """getaddrinfo's first (family, type, proto, canonname, sockaddr) for host:port; ServeError when it has none."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (OSError, UnicodeError) as e:
        raise ServeError(f"cannot serve on {host}:{port}: not an address of this machine "
                         f"({getattr(e, 'strerror', None) or e})") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (SO_REUSEADDR, as uvicorn binds); ServeError naming the problem."""
    family, kind, proto, _, address = address_of(host, port)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def api_keys(cfg: Config, ui_auth: tuple[str, str] | None = None) -> frozenset[str]:
    """The keys (file and environment); ServeError when a non-loopback address would be open to anyone
    (the API without keys, or the --ui page without a login)."""
    s = cfg.serve
    try:
        keys = load_api_keys(s.api_key_file)
    except ValueError as e:
        raise ServeError(str(e)) from None
    if not is_loopback(s.host) and not s.allow_no_auth:
        if not keys:
            raise ServeError(f"refusing to serve {s.host} without API keys: set {KEYS_ENV} or --api-key-file, "
                             "or pass --allow-no-auth to serve the network openly")
        if s.ui and ui_auth is None:
            raise ServeError(f"refusing to serve the page (--ui) on {s.host} without a login: give --auth "
                             "USER:PASSWORD (or LONGWATCH_AUTH), or pass --allow-no-auth")
    return keys


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(cfg: Config, ui_auth: tuple[str, str] | None = None) -> None:
    """Serve until interrupted; prints the URL and the model once ready."""
    from longwatch.app.cli import warn_if_random_weights
    from longwatch.app.serve.app import UI_PATH, create_api
    from longwatch.backbone.model import Backbone

    s = cfg.serve
    address_of(s.host, s.port)  # a bad address first, then keys, and only then is anything bound
    keys = api_keys(cfg, ui_auth)
    sock = bind(s.host, s.port)
    try:
        warn_if_random_weights(cfg.model.name)
        log.info("loading model %s", cfg.model.name)
        backbone = Backbone.load(cfg.model)
        app = create_api(cfg, backbone, keys, ui_auth)
        base = url_of(s.host, s.port)
        ui = f"; page at {base}{UI_PATH}" if s.ui else ""
        print(f"longwatch serve: {base}/v1 (model {s.served_model_name or backbone.name}{ui}; "
              f"{'API key required' if keys else 'no API key'})", flush=True)
        run_uvicorn(app, sock)
    finally:
        sock.close()


def run_uvicorn(app: Any, sock: socket.socket) -> None:
    """uvicorn on an already bound socket, quiet but for warnings; returns after SIGINT or SIGTERM.

    uvicorn shuts down gracefully on those signals, then raises them again for the handlers it found; the
    ones set here take them, so a stopped server is a normal end (exit 0), not an interrupted one.
    """
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=30, timeout_graceful_shutdown=3,
                            limit_concurrency=512, access_log=False)
    server = uvicorn.Server(config)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("longwatch serve: stopped", file=sys.stderr, flush=True)


def _stopped(_sig: int, _frame: Any) -> None:
    """Takes the signal uvicorn raises again after its graceful shutdown."""
