"""`longwatch average-weights`: one compact checkpoint that is the mean of several `longwatch train` exports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from longwatch.app.cli import UserError


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="average the weights of trained exports (a model soup) into one compact file",
        description="Write the element-wise mean of the weights of two or more compact files that `longwatch "
                    "train` exported from runs fine-tuned from one another (same preset and vocabulary). The "
                    "result loads with --model FILE like any export; its header names the files averaged.")
    p.add_argument("files", nargs="+", metavar="FILE", help="compact files to average (at least two)")
    p.add_argument("--out", required=True, metavar="FILE", help="the averaged compact file to write")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from longwatch.backbone.shipped import average_compact

    paths = [Path(f) for f in args.files]
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p}: no such file")
    out = Path(args.out)
    if out.resolve() in {p.resolve() for p in paths}:
        raise UserError(f"--out {out}: is one of the files averaged; write the mean to another file")
    try:
        average_compact(paths, out)
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror})") from None
    print(f"averaged {len(paths)} files into {out}\nask with it: longwatch ask VIDEO QUESTION --model {out}")
    return 0
