"""`longwatch demo`: the offline demo — a generated NeedleStream video and the shipped needle-tiny checkpoint."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from longwatch.app.cli import add_config_flags, config_from_args, warn_if_random_weights

TRAINED_DEMO_MODEL = "needle-tiny"
"""The demo's model when its weights are shipped or installed by `longwatch train`; else `tiny`."""
BANNER = (
    "longwatch demo: a 40-second NeedleStream video (signs, shapes, a flashing star) answered by the\n"
    "needle-tiny checkpoint (a small Qwen3-VL trained on NeedleStream) when its weights are shipped or\n"
    "installed by `longwatch train`, else by the random-weights `tiny` preset, whose answers are meaningless.\n"
    "For any other video use a real checkpoint: --model Qwen/Qwen3-VL-2B-Instruct (or a local folder)."
)
DEMO_QUESTIONS = ("What word was on the sign at 00:12?",
                  "When was the word KIWI shown on a sign? Answer with the start and end time in seconds, "
                  "like 12.0-14.5.",
                  "How many times has the yellow star flashed so far? Answer with a number.")


def demo_model() -> str:
    from longwatch.backbone.shipped import is_available

    return TRAINED_DEMO_MODEL if is_available(TRAINED_DEMO_MODEL) else "tiny"


def demo_video_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "longwatch" / "demo"
    return root / "needlestream-v2.mp4"


def ensure_demo_video() -> tuple[Path, Any]:
    """Draw (once) the sample video with the NeedleStream renderer; returns it and its plan."""
    from longwatch.eval.needlestream import demo_plan
    from longwatch.eval.needlestream_render import write_video

    plan = demo_plan()
    path = demo_video_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.mp4")
        write_video(plan, tmp)
        os.replace(tmp, path)
    return path, plan


def describe(plan: Any) -> str:
    signs = [n for n in plan.needles if n.kind == "sign"]
    return ", ".join(f"{n.word} at {n.t0:.0f}-{n.t1:.0f}s" for n in signs)


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    from longwatch.app.commands.ui import add_ui_flags

    p = subparsers.add_parser(name, help="offline demo: a generated NeedleStream video, the trained needle-tiny model",
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

    cfg = config_from_args(args, {"model.name": getattr(args, "model.name", None) or demo_model()})
    video, plan = ensure_demo_video()
    warn_if_random_weights(cfg.model.name)
    if not args.json:
        print(f"sample video: {video} (signs: {describe(plan)})")
    bb = Backbone.load(cfg.model)
    memory = open_memory(bb, cfg, stream_id="demo")
    try:
        ingest = stream_into(memory, str(video), cfg)
        if not args.json:
            print(f"ingested {ingest['patches']} temporal patches in {ingest['ingest_s']:.1f}s "
                  f"({ingest['patches_per_s']:.1f} patches/s), policy {cfg.memory.policy}")
        for q in DEMO_QUESTIONS:
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

    cfg = config_from_args(args, {"model.name": getattr(args, "model.name", None) or demo_model()})
    auth = auth_from_args(args)
    video, plan = ensure_demo_video()
    print(f"sample video: {video} (signs: {describe(plan)})")
    # the banner is about random weights: a real checkpoint passed with --model gets none
    banner = demo_banner(cfg.model.name) if is_random_preset(cfg.model.name) else None
    serve(cfg, auth=auth, preload=str(video), banner=banner)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_cli(args) if args.cli else run_ui(args)
