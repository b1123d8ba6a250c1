"""`longwatch demo`: the offline demo — a generated sample video on the `tiny` preset, no network needed."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from longwatch.app.cli import add_config_flags, config_from_args, warn_if_random_weights

BANNER = (
    "longwatch demo: the `tiny` preset has RANDOM weights, so its answers are meaningless; the demo shows\n"
    "the machinery (streaming ingest, bounded memory, retrieval, time-grounded evidence) working offline.\n"
    "For real answers use a checkpoint: longwatch ask VIDEO \"QUESTION\" --model Qwen/Qwen3-VL-2B-Instruct\n"
    "(or a local folder with a downloaded Qwen3-VL checkpoint)."
)


def demo_video_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "longwatch" / "demo"
    return root / "sample.mp4"


def ensure_demo_video() -> tuple[Path, list]:
    """Generate (once) the 40-second sample video with signs at known times."""
    from longwatch.eval.sample_video import make_sample_video, plan_signs

    path = demo_video_path()
    if path.is_file():
        return path, plan_signs()
    signs = make_sample_video(path.with_suffix(".tmp.mp4"))
    os.replace(path.with_suffix(".tmp.mp4"), path)
    return path, signs


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    from longwatch.app.commands.ui import add_ui_flags

    p = subparsers.add_parser(name, help="offline demo on a generated video (tiny preset, random weights)",
                              description=BANNER)
    p.add_argument("--cli", action="store_true", help="run in the terminal instead of the web UI")
    p.add_argument("--json", action="store_true", help="(--cli) print JSON lines")
    add_ui_flags(p)
    add_config_flags(p)
    p.set_defaults(run=run)
    return p


def run_cli(args: argparse.Namespace) -> int:
    from longwatch.app.streaming import answer_dict, open_memory, stream_into
    from longwatch.backbone.model import Backbone

    cfg = config_from_args(args, {"model.name": getattr(args, "model.name", None) or "tiny"})
    video, signs = ensure_demo_video()
    warn_if_random_weights(cfg.model.name)
    if not args.json:
        print(f"sample video: {video} ({', '.join(f'{s.text} at {s.t_start:.0f}-{s.t_end:.0f}s' for s in signs)})")
    bb = Backbone.load(cfg.model)
    memory = open_memory(bb, cfg, stream_id="demo")
    try:
        ingest = stream_into(memory, str(video), cfg)
        if not args.json:
            print(f"ingested {ingest['patches']} temporal patches in {ingest['ingest_s']:.1f}s "
                  f"({ingest['patches_per_s']:.1f} patches/s), policy {cfg.memory.policy}")
        questions = [f"What did the sign say at 00:{int(signs[1].t_start) + 1:02d}?",
                     f"When did the sign say {signs[-1].text}?"]
        for q in questions:
            if args.json:
                print(json.dumps({"question": q, **answer_dict(memory.ask(q), ingest)}))
                continue
            print(f"\nQ: {q}\nA: ", end="", flush=True)
            ans = memory.ask(q, on_text=lambda s: print(s, end="", flush=True))
            used = ", ".join(f"{e.t_start:.0f}-{e.t_end:.0f}s ({e.reason})" for e in ans.evidence
                             if e.reason in ("retrieved", "time"))
            print(f"\n   first token {ans.ttft_s * 1000:.0f} ms; evidence: {used or 'recent window only'}")
        tiers = memory.stats()["tiers"]
        if not args.json:
            print("\nmemory: " + "; ".join(f"{k} {v['blocks']} blocks, {v['bytes'] / 2**20:.1f} MiB"
                                          for k, v in tiers.items()))
    finally:
        memory.close()
    return 0


def run_ui(args: argparse.Namespace) -> int:
    """The web UI with the sample video already playing in every new session (issue 5)."""
    from longwatch.app.commands.ui import auth_from_args
    from longwatch.app.ui.layout import demo_banner
    from longwatch.app.ui.server import serve
    from longwatch.backbone.presets import is_random_preset

    cfg = config_from_args(args, {"model.name": getattr(args, "model.name", None) or "tiny"})
    auth = auth_from_args(args)
    video, signs = ensure_demo_video()
    print(f"sample video: {video} ({', '.join(f'{s.text} at {s.t_start:.0f}-{s.t_end:.0f}s' for s in signs)})")
    # the banner is about random weights: a real checkpoint passed with --model gets none
    banner = demo_banner(cfg.model.name) if is_random_preset(cfg.model.name) else None
    serve(cfg, auth=auth, preload=str(video), banner=banner)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_cli(args) if args.cli else run_ui(args)
