"""`longwatch eval`: stream benchmark videos through memory policies, score answers, write reports."""

from __future__ import annotations

import argparse
import importlib
import json
import time
from typing import Any

from longwatch.app.cli import UserError, add_config_flags, config_from_args, warn_if_random_weights
from longwatch.eval.budgets import Budget, parse_budgets
from longwatch.eval.progress import add_progress_flags


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    from longwatch.eval.formats import FORMATS

    p = subparsers.add_parser(name, help="run streaming benchmarks and write reports",
                              description="Stream each benchmark video once per policy, ask every question at its "
                                          "time, score with the benchmark's rules, write JSON/CSV/Markdown/PNG.")
    p.add_argument("--bench", required=True, metavar="FILE_OR_DIR",
                   help="annotation file, or a folder of them (format detected from content)")
    p.add_argument("--videos", metavar="DIR", help="folder holding the videos (default: beside the annotations)")
    p.add_argument("--format", choices=FORMATS, help="force the annotation format instead of detecting it")
    p.add_argument("--policy", dest="policies", metavar="P[,P...]",
                   help="memory policies to compare, comma-separated (default: the config's)")
    p.add_argument("--budget", metavar="POINT[,POINT...]",
                   help="budget points to sweep, comma-separated: a size is the device budget (64MB,256MB); "
                        "tier=size pairs joined by + set any tiers (host=512KiB, device=1MiB+host=1MiB, disk=1GB), "
                        "the others as the config and flags say (default: the config's)")
    p.add_argument("--out", metavar="DIR", help="report folder (default: ./runs/eval-YYYYmmdd-HHMMSS)")
    p.add_argument("--dry-run", action="store_true", help="parse and validate only; print counts per task")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--max-videos", type=int, metavar="N", help="only the first N videos of each file")
    p.add_argument("--fidelity", action="store_true",
                   help="also measure KL / top-1 agreement to the full context and attention-mass recall")
    p.add_argument("--judge", metavar="MODULE:FUNC",
                   help="score open answers with FUNC(question, reply) -> [0, 1] (off: exact match only)")
    p.add_argument("--choices", choices=("generate", "text", "letter"), default="generate",
                   help="multiple-choice questions: generate a free answer and parse it (default, the benchmarks' "
                        "protocol), or pick the choice the model finds most probable, scoring the choices' texts "
                        "(text) or their letters (letter); the report records which")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--compact", action="store_true",
                   help="a report to commit: run.json without the per-answer records (they are all in "
                        "questions.csv), questions.csv and memory.csv gzipped")
    add_progress_flags(p)
    add_config_flags(p, memory=False)
    g = p.add_argument_group("memory")
    g.add_argument("--host-budget", dest="memory.host_budget", metavar="B", help="e.g. 8GiB; 0 disables")
    g.add_argument("--disk-budget", dest="memory.disk_budget", metavar="B", help="e.g. 100GB; 0 disables")
    g.add_argument("--window", dest="memory.window_blocks", type=int, metavar="W", help="recent patches kept")
    g.add_argument("--retrieve", dest="memory.retrieve_blocks", type=int, metavar="K", help="blocks retrieved")
    p.set_defaults(run=run)
    return p


def _policies(args: argparse.Namespace, default: str) -> list[str]:
    from longwatch.memory.config import POLICIES

    names = [s.strip() for s in (args.policies or default).split(",") if s.strip()]
    bad = [n for n in names if n not in POLICIES]
    if bad or not names:
        raise UserError(f"--policy: unknown policy {bad[0] if bad else '(none)'!r} (choose from {', '.join(POLICIES)})")
    return names


def _budgets(spec: str | None) -> list[Budget]:
    """--budget as sweep points; a bad item is a UserError naming it."""
    try:
        return parse_budgets(spec)
    except ValueError as e:
        raise UserError(f"--budget: {e}") from None


def _judge(spec: str | None) -> Any:
    if not spec:
        return None
    module, _, func = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"--judge {spec}: cannot load ({e})") from None


def _dry_run(benches: list, as_json: bool) -> int:
    summaries = [b.summary() for b in benches]
    if as_json:
        print(json.dumps({"files": summaries, "videos": sum(s["videos"] for s in summaries),
                          "questions": sum(s["questions"] for s in summaries)}, indent=1))
        return 0
    for s in summaries:
        rec = f", {s['records']} records" if "records" in s else ""
        print(f"{s['file']}: {s['format']}, {s['videos']} videos, {s['questions']} questions{rec}"
              f"{' (offline: asked at the end)' if s['offline'] else ''}")
        width = max(len(t) for t in s["tasks"])
        for task, n in s["tasks"].items():
            print(f"  {task:<{width}}  {n}")
    print(f"total: {len(summaries)} file(s), {sum(s['videos'] for s in summaries)} videos, "
          f"{sum(s['questions'] for s in summaries)} questions")
    return 0


def run(args: argparse.Namespace) -> int:
    from longwatch.eval.formats import load_benches

    benches = load_benches(args.bench, args.format)
    cfg = config_from_args(args)
    policies = _policies(args, cfg.memory.policy)
    budgets = _budgets(args.budget)
    if args.dry_run:
        return _dry_run(benches, args.json)

    from longwatch.backbone.model import Backbone
    from longwatch.eval.environment import provenance, results_dir
    from longwatch.eval.report import markdown, write_report
    from longwatch.eval.runner import (RunOptions, Runner, budget_preflight, fidelity_factory, memory_stream_factory,
                             open_patches_default)

    judge = _judge(args.judge)
    out = results_dir(args.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")  # writable before any work
    warn_if_random_weights(cfg.model.name)
    if args.fidelity:
        fidelity_factory(None, cfg)  # fail before the model loads when eval/fidelity.py is missing
    backbone = Backbone.load(cfg.model.greedy())  # greedy whatever the checkpoint's defaults
    fid = fidelity_factory(backbone, cfg) if args.fidelity else None
    runner = Runner(cfg, memory_stream_factory(backbone), open_patches_default(cfg), fid, budget_preflight(backbone, cfg))
    videos = args.videos or None
    t0 = time.perf_counter()
    result = runner.run(benches, videos, RunOptions(policies, budgets, args.fidelity, judge, args.max_videos,
                                                    progress=args.progress, choices=args.choices))
    from longwatch.memory.schema import as_dict

    meta = {**provenance(), "model": cfg.model.name, "policies": policies, "budgets": [b.device for b in budgets],
            "budget_points": [{"label": b.label, **as_dict(b)} for b in budgets], "bench": str(args.bench),
            "default_budget": cfg.memory.device_budget, "config": as_dict(cfg), "wall_s": time.perf_counter() - t0,
            "choices": args.choices,
            "default_budgets": {t: getattr(cfg.memory, f"{t}_budget") for t in ("device", "host", "disk")}}
    files = write_report(result, out, meta, plots=not args.no_plots, compact=args.compact)
    if args.json:
        print(json.dumps({"out": str(out), "files": {k: str(v) for k, v in files.items()},
                          "summary": json.loads(files["json"].read_text())["summary"]}, indent=1, default=str))
    else:
        print(markdown(json.loads(files["json"].read_text())["summary"]))
        print(f"report: {out} ({len(result.records)} answers in {meta['wall_s']:.1f} s)")
    return 0
