"""`longwatch ask VIDEO QUESTION`: stream a video through Qwen3-VL into bounded memory and answer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from longwatch.app.cli import UserError, add_config_flags, config_from_args, warn_if_random_weights
from longwatch.eval.progress import add_progress_flags


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="answer a question about a video file or stream",
                              description="Stream VIDEO (file, URL or webcam index) into memory, then answer QUESTION. "
                                          "Use '-' as VIDEO with --memory-dir to ask a saved memory.")
    p.add_argument("video", metavar="VIDEO", help="video file, rtsp/http URL, webcam index, or '-' (saved memory)")
    p.add_argument("question", metavar="QUESTION", help="the question, e.g. 'What was on the sign at 01:30?'")
    p.add_argument("--at", type=float, metavar="SECONDS", help="ask at this point of the video (default: the end)")
    p.add_argument("--seconds", type=float, metavar="N",
                   help="live sources (webcam, rtsp, rtmp): watch this many seconds, then answer")
    p.add_argument("--memory-dir", metavar="DIR", help="persist the stream's memory here (journal; resumable)")
    p.add_argument("--choice", dest="choices", action="append", metavar="TEXT",
                   help="answer with one of these (give it once per choice): the choice the model finds most "
                        "probable, scored whole, instead of a free answer; the probabilities go to stderr")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_progress_flags(p)
    add_config_flags(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    saved = args.memory_dir and (Path(args.memory_dir) / "journal.jsonl").is_file()
    if args.video == "-":
        if not saved:
            raise UserError("VIDEO '-' asks a saved memory: give --memory-dir with one in it")
    else:
        if saved:
            raise UserError(f"--memory-dir {args.memory_dir} already holds a stream; ask it with VIDEO '-', "
                            "or use an empty folder")
        from longwatch.app.streaming import check_video
        from longwatch.ingest.uri import parse_source

        spec = parse_source(args.video)
        live = spec.kind == "webcam" or spec.scheme in ("rtsp", "rtsps", "rtmp", "rtmps")
        if live and args.seconds is None and args.at is None:
            raise UserError(f"{spec.display} is a live source: give --seconds N to watch N seconds, then answer")
        if spec.kind == "file":
            check_video(args.video, cfg)
    if not args.question.strip():
        raise UserError("QUESTION is empty")
    if args.choices is not None:
        from longwatch.backbone.choices import check_choices

        try:
            check_choices(args.choices, "--choice")
        except ValueError as e:
            raise UserError(str(e)) from None

    from longwatch.app.streaming import answer_dict, open_memory, stream_into
    from longwatch.backbone.model import Backbone

    warn_if_random_weights(cfg.model.name)
    bb = Backbone.load(cfg.model)
    memory = open_memory(bb, cfg, args.memory_dir)
    try:
        ingest = None
        if args.video != "-":
            ingest = stream_into(memory, args.video, cfg, until_s=args.at, seconds=args.seconds,
                                 progress=args.progress)  # a bar over the video's length, on stderr
        try:
            memory.check_question(args.question)
            if args.choices is not None:
                from longwatch.backbone.choices import choice_ids

                choice_ids(bb.layout, args.choices, cfg.memory.answer_tokens // 2, "--choice")
        except ValueError as e:
            raise UserError(str(e)) from None
        if args.json:
            ans = memory.ask(args.question, choices=args.choices)
            print(json.dumps(answer_dict(ans, ingest)))
        else:
            ans = memory.ask(args.question, on_text=lambda s: print(s, end="", flush=True), choices=args.choices)
            print()
            if ans.choices:
                print("[choices: " + ", ".join(f"{c['choice']} {c['prob']:.2f}" for c in ans.choices) + "]",
                      file=sys.stderr)
            used = [e for e in ans.evidence if e.reason in ("retrieved", "time")]
            if used:
                spans = ", ".join(f"{e.t_start:.0f}-{e.t_end:.0f}s" for e in used[:8])
                print(f"[evidence: {spans}]", file=sys.stderr)
            print(f"[{ans.memory['patches']} patches, first token {ans.ttft_s * 1000:.0f} ms, "
                  f"{len(ans.token_ids)} tokens]", file=sys.stderr)
    finally:
        memory.close()
    return 0
