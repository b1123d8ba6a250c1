"""Memory benchmark: stream a synthetic video of M minutes; peak bytes per tier vs budgets, blocks, host RSS.

    longwatch bench memory --model tiny --minutes 10 --policy rekv --device-budget 64MB --host-budget 256MB --json
"""

from __future__ import annotations

import argparse
import json
import time

from longwatch.eval.flags import add_config_flags
from longwatch.eval.progress import add_progress_flags, advance_to, seconds_bar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=10.0, help="length of the synthetic stream (default 10)")
    p.add_argument("--memory-dir", metavar="DIR", help="also journal the memory to DIR (measures persistence cost)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="DIR", help="results folder (default ./runs)")
    p.add_argument("--sample-every", type=int, default=50, metavar="N", help="record tier bytes every N patches")
    add_progress_flags(p)
    add_config_flags(p)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def main(args: argparse.Namespace) -> int:
    from longwatch.backbone.model import Backbone
    from longwatch.eval.environment import model_tag, results_dir, save_result
    from longwatch.eval.flags import config_from_args
    from longwatch.eval.synthetic import synthetic_patches
    from longwatch.memory.schema import format_bytes
    from longwatch.memory.stream import MemoryStream

    cfg = config_from_args(args)
    out = results_dir(args.out)
    rss_start = _rss()
    bb = Backbone.load(cfg.model.greedy())  # greedy whatever the checkpoint's defaults
    rss_model = _rss()
    ms = MemoryStream(bb, cfg.memory, stream_id="bench-memory", memory_dir=args.memory_dir)
    timeline, over = [], []
    t0 = time.perf_counter()
    n = 0
    desc = f"memory: {cfg.memory.policy} {args.minutes:g} min"
    with seconds_bar(args.minutes * 60, desc, force=args.progress) as bar:
        for patch in synthetic_patches(args.minutes, cfg.ingest.fps, cfg.ingest.frame_size):
            ms.ingest(patch)
            n += 1
            advance_to(bar, patch.t_end)
            tiers = ms.stats()["tiers"]
            for name, t in tiers.items():  # the invariant, checked after every patch
                if t["budget"] is not None and t["bytes"] > t["budget"]:
                    over.append({"patch": n, "tier": name, "bytes": t["bytes"], "budget": t["budget"]})
            if n % args.sample_every == 0:
                timeline.append({"patch": n, "t": patch.t_end, "rss": _rss(),
                                 **{name: t["bytes"] for name, t in tiers.items()}})
    elapsed = time.perf_counter() - t0
    ans = ms.ask("What did the sign say a minute ago?")
    stats = ms.stats()
    ms.close()
    result = {
        "model": cfg.model.name, "policy": cfg.memory.policy, "minutes": args.minutes, "patches": n,
        "frame_size": cfg.ingest.frame_size, "fps": cfg.ingest.fps,
        "tiers": {name: {"peak": t["peak"], "budget": t["budget"], "blocks": t["blocks"], "bytes": t["bytes"]}
                  for name, t in stats["tiers"].items()},
        "over_budget": over, "evicted_blocks": stats["evicted"], "rebases": stats["rebases"],
        "host_rss": {"start": rss_start, "after_model": rss_model, "end": _rss()},
        "ingest_s": elapsed, "patches_per_s": n / elapsed, "answer_ttft_s": ans.ttft_s,
        "memory_config": {k: getattr(cfg.memory, k) for k in cfg.memory.__dataclass_fields__},
        "timeline": timeline,
    }
    path = save_result(f"memory_{model_tag(cfg.model.name)}_{cfg.memory.policy}_{args.minutes:g}min", result, out)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "timeline"} | {"saved": str(path)}))
    else:
        print(f"{cfg.memory.policy} on {cfg.model.name}: {n} patches ({args.minutes:g} min) in {elapsed:.1f}s")
        for name, t in result["tiers"].items():
            budget = "unbounded" if t["budget"] is None else format_bytes(t["budget"])
            print(f"  {name:6s} peak {format_bytes(t['peak']):>10s} of {budget:>10s}, {t['blocks']} blocks")
        print(f"  host RSS {format_bytes(rss_start)} at start, {format_bytes(result['host_rss']['end'])} at end;"
              f" over budget: {len(over)} times; saved {path}")
    return 1 if over else 0
