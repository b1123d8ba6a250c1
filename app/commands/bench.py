"""`longwatch bench NAME`: run one benchmark from eval/ (eval/bench_<name>.py: add_arguments(parser), main(args))."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Any

from longwatch.app.cli import Verbs

# name -> module; only modules present in this checkout are registered.
BENCHES = {
    "decode": "longwatch.eval.bench_decode",
    "memory": "longwatch.eval.bench_memory",
    "fidelity": "longwatch.eval.bench_fidelity",
    "speed": "longwatch.eval.bench_speed",
    "retrieval": "longwatch.eval.bench_retrieval",
    "offline": "longwatch.eval.bench_offline",
    "soak": "longwatch.eval.bench_soak",
    "rtsp-soak": "longwatch.eval.bench_rtsp_soak",
    "watch": "longwatch.eval.bench_watch",
    "serve": "longwatch.eval.bench_serve",
}


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="run a benchmark (results under --out, default ./runs)",
                              description="Run one benchmark; each writes JSON (and plots) to --out, default ./runs.")
    sub = Verbs(p.add_subparsers(dest="bench", metavar="NAME", required=True))
    for bench, module in BENCHES.items():
        if importlib.util.find_spec(module) is None:
            continue
        mod = importlib.import_module(module)
        doc = (mod.__doc__ or bench).strip().splitlines()[0]
        bp = sub.add_parser(bench, help=doc, description=mod.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(bp)
        bp.set_defaults(bench_main=mod.main)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    return int(args.bench_main(args) or 0)
