"""`longwatch ui`: serve the Gradio page (upload, webcam, camera URL; chat while it plays)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from longwatch.app.cli import UserError, add_config_flags, config_from_args


def add_ui_flags(p: argparse.ArgumentParser) -> None:
    """Server flags, named as in the Qwen3-VL web demo where they overlap."""
    g = p.add_argument_group("server")
    g.add_argument("--server-name", dest="ui.server_name", metavar="HOST",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    g.add_argument("--server-port", dest="ui.server_port", type=int, metavar="PORT", help="port (default 7860)")
    g.add_argument("--share", dest="ui.share", action="store_const", const=True,
                   help="also create a public gradio.live link")
    g.add_argument("--auth", metavar="USER:PASSWORD",
                   help="require this login (or set LONGWATCH_AUTH, which keeps it out of the process list)")
    g.add_argument("--max-sessions", dest="ui.max_sessions", type=int, metavar="N",
                   help="concurrent browser sessions (default 4)")
    g.add_argument("--idle-timeout", dest="ui.idle_timeout_s", type=float, metavar="S",
                   help="free a session after S seconds without user activity (default 900)")
    g.add_argument("--max-upload-mb", dest="ui.max_upload_mb", type=int, metavar="MB",
                   help="largest accepted upload (default 2048)")


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="serve the web UI: ask a video questions while it plays",
        description="Serve a Gradio page where you upload a video (or start the browser webcam, or connect an "
                    "RTSP/RTMP/HTTP camera) and ask questions while it plays. Answers stream token by token, "
                    "their times seek the player, and an evidence strip shows the memory blocks used.")
    add_ui_flags(p)
    add_config_flags(p)
    p.set_defaults(run=run)
    return p


def auth_from_args(args: argparse.Namespace) -> tuple[str, str] | None:
    """--auth, else $LONGWATCH_AUTH, as (user, password); UserError when malformed."""
    from longwatch.app.ui.server import parse_auth

    try:
        return parse_auth(args.auth or os.environ.get("LONGWATCH_AUTH"))
    except ValueError as e:
        raise UserError(f"{e} (from {'--auth' if args.auth else 'LONGWATCH_AUTH'})") from None


def run(args: argparse.Namespace) -> int:
    from longwatch.app.ui.server import serve

    cfg = config_from_args(args)
    serve(cfg, auth=auth_from_args(args))  # warns before loading a random-weights preset
    return 0
