"""`longwatch train`: train the needle-tiny checkpoint on NeedleStream v2 (CPU), resumable, then export it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from longwatch.app.cli import UserError


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="train the small needle-tiny Qwen3-VL on NeedleStream (CPU, resumable)",
        description="Train a small Qwen3-VL (real architecture, reduced vocabulary) on NeedleStream v2 videos "
                    "drawn on the fly from training seeds; checkpoints to --out every few minutes and resumes "
                    "from there; writes the compact checkpoint, a training curve and a run record.")
    p.add_argument("--preset", default="needle-tiny", help="architecture to train (default needle-tiny)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and training videos")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--init", default=None, metavar="FILE",
                   help="fine-tune: start from this compact checkpoint (e.g. backbone/weights/needle-tiny.safetensors)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps")
    p.add_argument("--glimpse-steps", type=int, default=None, help="steps of glimpses only before the mix")
    p.add_argument("--glimpse-share", type=float, default=None, help="share of glimpse steps after them")
    p.add_argument("--clip-share", type=float, default=None, help="share of clip steps after them")
    p.add_argument("--vision-lr-mult", type=float, default=None,
                   help="the vision tower's learning rate as a multiple of --lr (default 1)")
    p.add_argument("--shape-aux", type=float, default=None,
                   help="weight of the training-only shape read-out loss on the vision tower (default 1; 0 = none)")
    p.add_argument("--cell-aux", type=float, default=None,
                   help="weight of a second training-only read-out naming the grid cell of those patches (default 0)")
    p.add_argument("--watch-share", type=float, default=None,
                   help="share of watch steps (yes/no about the newest patch, after every patch of a clip)")
    p.add_argument("--drill-share", type=float, default=None,
                   help="share of time-drill steps (a clip and text-only lookups by time in timed notes)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="checkpoint folder (default runs/train/PRESET-seedN); an existing one is resumed")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="where the curve PNG and run JSON go (default: --out)")
    p.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out and start over")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from longwatch.eval.train import TrainConfig, train
    from longwatch.eval.train_report import finish

    if args.preset != "needle-tiny":
        raise UserError(f"--preset {args.preset}: only needle-tiny can be trained")
    opts = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("warmup", args.warmup),
                              ("glimpse_steps", args.glimpse_steps), ("glimpse_share", args.glimpse_share),
                              ("clip_share", args.clip_share), ("watch_share", args.watch_share),
                              ("drill_share", args.drill_share),
                              ("vision_lr_mult", args.vision_lr_mult),
                              ("shape_aux", args.shape_aux), ("cell_aux", args.cell_aux))
            if v is not None}
    if args.init:
        if not Path(args.init).is_file():
            raise UserError(f"--init {args.init}: no such file")
        opts["init"] = str(Path(args.init).resolve())
    try:
        cfg = TrainConfig(preset=args.preset, seed=args.seed, threads=args.threads, **opts)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = Path(args.out or f"runs/train/{args.preset}-seed{args.seed}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror}); pick a writable folder") from None
    try:
        record = train(cfg, out, progress=True, resume=not args.fresh)
    except ValueError as e:
        raise UserError(str(e)) from None
    finish(record, out, Path(args.results) if args.results else out)
    from longwatch.backbone.shipped import shipped_file, trained_file

    compact = record["compact_checkpoint"]
    note = "" if shipped_file(args.preset) == trained_file(args.preset) else \
        f" (--model {args.preset} loads the one this package ships, not this one)"
    print(f"trained weights: {compact}\nask with them: longwatch ask VIDEO QUESTION --model {compact}{note}")
    return 0
