"""`longwatch serve`: an OpenAI-compatible HTTP API over one model, with live streams as resources."""

from __future__ import annotations

import argparse
from typing import Any

from longwatch.app.cli import add_config_flags, config_from_args


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    """Server flags; each overrides one key of the config's `serve` section (vLLM's names where they overlap)."""
    g = p.add_argument_group("server")
    g.add_argument("--host", dest="serve.host", metavar="HOST",
                   help="address to bind (default 127.0.0.1; any other address needs API keys)")
    g.add_argument("--port", dest="serve.port", type=int, metavar="PORT", help="port (default 8000)")
    g.add_argument("--ui", dest="serve.ui", action="store_const", const=True,
                   help="also serve the Gradio page at /ui (its login: --auth or LONGWATCH_AUTH)")
    g.add_argument("--auth", metavar="USER:PASSWORD", help="with --ui: the page's login")
    g.add_argument("--served-model-name", dest="serve.served_model_name", metavar="NAME",
                   help="model id in /v1/models and requests (default: the model's name)")
    g.add_argument("--reasoning-parser", dest="serve.reasoning_parser", metavar="P",
                   help="auto (qwen3 for Thinking checkpoints), qwen3, none")
    g.add_argument("--memory-dir", dest="serve.memory_dir", metavar="DIR",
                   help="journal every stream's memory and the list of streams here; a restarted server reopens them")
    g = p.add_argument_group("scale-out on Ray (pip install \"longwatch[ray]\")")
    g.add_argument("--ray", dest="serve.ray", nargs="?", const="auto", metavar="auto|ADDRESS",
                   help="worker actors hold the models and streams: auto = this machine's cluster (started if none), "
                        "or HOST:PORT / ray://HOST:PORT of a cluster's head")
    g.add_argument("--ray-workers", dest="serve.ray_workers", type=int, metavar="N",
                   help="worker actors (default: one per GPU, or one per node without GPUs)")
    g.add_argument("--ray-worker-cpus", dest="serve.ray_worker_cpus", type=float, metavar="N",
                   help="CPUs each worker reserves (default 1)")
    g = p.add_argument_group("security and limits")
    g.add_argument("--api-key-file", dest="serve.api_key_file", metavar="FILE",
                   help="API keys, one per line (also: LONGWATCH_API_KEYS=k1,k2); none: no key needed on loopback")
    g.add_argument("--allow-no-auth", dest="serve.allow_no_auth", action="store_const", const=True,
                   help="serve a non-loopback address without API keys")
    g.add_argument("--allowed-local-media-path", dest="serve.allowed_local_media_path", metavar="DIR",
                   help="file:// URLs may name files under DIR (default: no local files)")
    g.add_argument("--allowed-source-hosts", dest="serve.allowed_source_hosts", metavar="H[,H...]",
                   help="hosts, addresses or networks camera URLs may name although loopback/private/link-local")
    g.add_argument("--max-streams", dest="serve.max_streams", type=int, metavar="N",
                   help="streams and chat videos held at once (default 8)")
    g.add_argument("--max-pending", dest="serve.max_pending", type=int, metavar="N",
                   help="chat completions running or waiting at once (default 16)")
    g.add_argument("--max-watches", dest="serve.max_watches", type=int, metavar="N",
                   help="watches per stream, each one short forward per interval (default 8)")
    g.add_argument("--max-request-kb", dest="serve.max_request_kb", type=int, metavar="KB",
                   help="largest request body (default 1024)")
    g.add_argument("--request-timeout", dest="serve.request_timeout_s", type=float, metavar="S",
                   help="longest wait for a video to be encoded and for the model (default 300)")


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="serve an OpenAI-compatible HTTP API (chat about videos and live streams)",
        description="Serve /v1/chat/completions (video_url content parts; answers from memory that stays "
                    "between questions), /v1/models and /v1/streams (live cameras as resources, with events "
                    "over SSE) from one model in one process.")
    add_serve_flags(p)
    add_config_flags(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from longwatch.app.commands.ui import auth_from_args

    cfg = config_from_args(args)
    if cfg.serve.ray:  # the front door over Ray workers (imports nothing of Ray before it is asked for)
        from longwatch.app.serve.front import serve_ray

        serve_ray(cfg)
        return 0
    from longwatch.app.serve.server import serve

    serve(cfg, ui_auth=auth_from_args(args) if cfg.serve.ui else None)
    return 0
