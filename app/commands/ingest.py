"""`longwatch ingest SOURCE`: decode a file, webcam or stream into temporal patches without a model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
from typing import Any

from longwatch.app.cli import add_config_flags, config_from_args


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="decode a video source into temporal patches (no model); probe a camera or file",
        description="Decode SOURCE into Qwen3-VL temporal patches without a model and print one line per "
                    "patch (index, t_start, t_end, height, width) and one per state change "
                    "(connecting, streaming, reconnecting, ended, failed).")
    p.add_argument("source", metavar="SOURCE",
                   help="video file, webcam index (0) or /dev/videoN, or URL: rtsp://, rtmp://, http(s):// (HLS too)")
    p.add_argument("--seconds", type=float, metavar="N", help="stop after N seconds of video")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.add_argument("--realtime", dest="ingest.realtime", action="store_const", const=True,
                   help="play a file at wall-clock pace, like a live source")
    add_config_flags(p, model=False, memory=False)
    p.set_defaults(run=run)
    return p


class _Printer:
    """Lines from the ingest thread (states) and the main thread (patches), never interleaved."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.lock = threading.Lock()

    def __call__(self, record: dict[str, Any], text: str) -> None:
        with self.lock:
            try:
                print(json.dumps(record) if self.as_json else text, flush=True)
            except BrokenPipeError:  # `longwatch ingest ... | head`
                sys.stdout = None  # type: ignore[assignment]


def run(args: argparse.Namespace) -> int:
    from longwatch.ingest import open_stream

    if args.seconds is not None and args.seconds <= 0:
        from longwatch.app.cli import UserError

        raise UserError(f"--seconds must be > 0, got {args.seconds}")
    cfg = config_from_args(args).ingest
    out = _Printer(args.json)

    def on_state(s: Any) -> None:
        record = {"type": "state", **dataclasses.asdict(s)}
        details = ", ".join(f"{k}={v}" for k, v in (("attempt", s.attempt), ("next retry in", s.next_retry_s),
                                                     ("reason", s.reason)) if v)
        out(record, f"state {s.state:<12} {s.source}" + (f"  ({details})" if details else ""))

    with open_stream(args.source, cfg, on_state=on_state) as stream:
        start = None
        for patch in stream:
            start = patch.t_start if start is None else start
            record = {"type": "patch", "index": patch.index, "t_start": round(patch.t_start, 3),
                      "t_end": round(patch.t_end, 3), "height": patch.height, "width": patch.width,
                      "gap_before": round(patch.gap_before, 3)}
            gap = f"  gap {patch.gap_before:.2f} s before" if patch.gap_before else ""
            out(record, f"patch {patch.index:<6} {patch.t_start:9.2f} - {patch.t_end:9.2f} s  "
                        f"{patch.height}x{patch.width}{gap}")
            if args.seconds is not None and patch.t_end - start >= args.seconds:
                break
        stats = dataclasses.asdict(stream.stats())
    out({"type": "stats", **stats},
        f"stats  {stats['patches']} patches, {stats['dropped_frames']} dropped frames, "
        f"lag {stats['lag_s']:.2f} s, {stats['reconnects']} reconnect attempts, {stats['gaps']} gaps")
    return 0
