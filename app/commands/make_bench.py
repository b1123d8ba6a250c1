"""`longwatch make-bench`: write a seeded NeedleStream benchmark (videos + annotations) to a folder."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    from longwatch.eval.needlestream import PRESETS

    p = subparsers.add_parser(name, help="generate the NeedleStream synthetic streaming benchmark",
                              description="Write seeded synthetic videos with needles (signs, grid shapes, "
                                          "flashes, sequences, decoys) and their annotations (ReKV superset).")
    p.add_argument("--preset", choices=sorted(PRESETS), default="smoke",
                   help="smoke: 2 short low-res videos (CI); standard: minutes; long: 20-30 min videos")
    p.add_argument("--seed", type=int, default=0, help="same seed, same benchmark")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for annotations.json and videos/")
    p.add_argument("--videos", type=int, default=None, metavar="N", help="only the first N videos of the preset")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from longwatch.eval.needlestream_render import make_bench

    path = make_bench(args.preset, args.seed, args.out, progress=not args.no_progress, videos=args.videos)
    records = json.loads(path.read_text())
    tasks = Counter(c["task"] for r in records for c in r["conversations"])
    summary = {"annotations": str(path), "videos": len(records), "questions": sum(tasks.values()),
               "duration_s": round(sum(r["duration"] for r in records), 1), "tasks": dict(sorted(tasks.items()))}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"wrote {summary['videos']} videos ({summary['duration_s']} s) and {summary['questions']} questions "
              f"to {path}")
        from longwatch.eval.needlestream import PRESETS

        size = PRESETS[args.preset].size[0]
        print(f"next: longwatch eval --bench {path} --policy full,sliding,rekv --frame-size {min(size, 224)}")
    return 0
