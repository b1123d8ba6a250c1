"""Soak benchmark: H simulated hours of a synthetic stream; budgets, host RSS drift, position distances, hour-H exactness.

    longwatch bench soak --hours 24 --out eval/results/soak

One synthetic 2 fps stream (tiny, 32x32 frames: one vision token per patch, so a day is 86,400 patches)
per policy, `rekv` with all three tiers and `sliding` by default. Measured:
- budget violations: after every patch, any tier whose bytes or peak (everything counted, memory/tiers.py)
  pass its budget;
- host RSS at every simulated hour, and its drift from hour 1 to the last hour;
- the largest query-to-key position distance any forward saw (stats max_distance, with a question each
  simulated hour), against the model's trained positions;
- at the last hour, exactness: the stream answers a question from its sinks and window (rekv with
  `window_only`) with the same greedy tokens as a fresh stream that encodes the same prompt prefix and
  sink patches itself and is then given the same last window of blocks at the same positions. Sinks
  that had been rotated through every re-base, or a window placed wrong, would answer differently.
Exit 1 when a target is missed (0 violations, RSS drift < 5%, distance < trained positions, same tokens).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from longwatch.eval.flags import add_config_flags

TARGET_RSS_DRIFT = 0.05


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hours", type=float, default=24.0, help="simulated hours of stream (default 24)")
    p.add_argument("--policies", default="rekv,sliding", help="comma-separated policies (default rekv,sliding)")
    p.add_argument("--question-every-s", type=float, default=3600.0, metavar="S",
                   help="ask a question every S stream seconds (default 3600)")
    p.add_argument("--rebase-limit", type=int, default=131072, metavar="N",
                   help="re-base positions before they pass N (default 131072, the memory default; >= 4096)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="DIR", help="results folder (default ./runs)")
    add_config_flags(p, memory=False)
    p.set_defaults(**{"model.name": "tiny", "ingest.frame_size": "32"})


def check_settings(args: argparse.Namespace) -> list[str]:
    """Names of impossible settings, each with why (empty when all can run)."""
    bad = []
    if not args.hours > 0:
        bad.append(f"--hours: must be > 0, got {args.hours:g}")
    if not args.question_every_s > 0:
        bad.append(f"--question-every-s: must be > 0, got {args.question_every_s:g}")
    if args.rebase_limit < 4096:
        bad.append(f"--rebase-limit: must be >= 4096, got {args.rebase_limit}")
    from longwatch.memory.config import POLICIES

    for p in args.policies.split(","):
        if p.strip() not in POLICIES or p.strip() == "full":
            bad.append(f"--policies: {p.strip()!r} is not a bounded policy ({', '.join(x for x in POLICIES if x != 'full')})")
    return bad


def soak_config(policy: str, disk_dir: str, rebase_limit: int = 131072):
    """The soak's memory: small budgets so every tier fills and evicts within minutes of stream."""
    from longwatch.memory.config import MemoryConfig

    three_tiers = policy in ("rekv", "livevlm")
    return MemoryConfig(policy=policy, device_budget=4 * 2**20, host_budget=2 * 2**20 if three_tiers else 0,
                        disk_budget=4 * 2**20 if three_tiers else 0, disk_dir=disk_dir if three_tiers else "",
                        window_blocks=8, retrieve_blocks=4, time_blocks=4, answer_tokens=64, rebase_limit=rebase_limit)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _violations(stats: dict) -> list[dict]:
    out = []
    for name, t in stats["tiers"].items():
        if t["budget"] is not None and max(t["bytes"], t["peak"]) > t["budget"]:
            out.append({"tier": name, "bytes": t["bytes"], "peak": t["peak"], "budget": t["budget"]})
    return out


def fresh_twin(bb, ms, sink_patches):
    """A new stream that encodes the prompt prefix and the sink patches itself, then holds `ms`'s window
    blocks (their K/V as `ms` has them) at the same model positions: the cache a stream of any length
    should have, built without a single re-base."""
    from longwatch.memory.stream import MemoryStream

    twin = MemoryStream(bb, dataclasses.replace(ms.cfg, policy="sliding", host_budget=0, disk_budget=0, disk_dir=""),
                        stream_id="soak-twin")
    for p in sink_patches:
        twin.ingest(p)
    for block in ms.store.window:
        copy, kv = ms.store.export(block)
        start = block.pos_start - ms.base  # model position in the soaked stream
        twin.store.skip_to(start)
        twin.store.adopt(dataclasses.replace(copy, id=twin.store.state.next_id, pos_start=twin.base + start,
                                             rot_base=twin.base, tier="device", summary=None), kv.clone())
    return twin


def soak(bb, policy: str, hours: float, fps: float, frame_size: str, every_s: float, disk_dir: str,
         rebase_limit: int = 131072) -> dict:
    from longwatch.backbone.model import Sampling
    from longwatch.eval.synthetic import synthetic_patches
    from longwatch.memory.stream import MemoryStream

    cfg = soak_config(policy, disk_dir, rebase_limit)
    ms = MemoryStream(bb, cfg, stream_id=f"soak-{policy}")
    samp = Sampling(temperature=0.0, max_new_tokens=8)
    hourly, violations, sinks = [], [], []
    next_q = every_s
    t0 = time.perf_counter()
    n = 0
    for patch in synthetic_patches(hours * 60, fps, frame_size):
        ms.ingest(patch)
        n += 1
        if len(sinks) < cfg.sink_blocks:
            sinks.append(patch)
        for v in _violations(ms.stats()):
            violations.append({"patch": n, **v})
        if patch.t_end >= next_q - 1e-6:
            ago = max(0, int(patch.t_end - 600))
            ans = ms.ask(f"What was on the sign at {ago // 3600}:{ago % 3600 // 60:02d}:{ago % 60:02d}?", sampling=samp)
            for v in _violations(ms.stats()):
                violations.append({"patch": n, "after": "question", **v})
            s = ms.stats()
            hourly.append({"hour": round(patch.t_end / 3600, 3), "patches": n, "rss": _rss(),
                           "max_distance": s["max_distance"], "rebases": s["rebases"], "base": s["base"],
                           "evicted": s["evicted"], "answer_ttft_s": ans.ttft_s,
                           "tiers": {k: t["bytes"] for k, t in s["tiers"].items()},
                           "wall_s": time.perf_counter() - t0})
            print(f"  {policy} hour {hourly[-1]['hour']:g}: rss {hourly[-1]['rss'] / 2**20:.1f} MiB, max distance "
                  f"{s['max_distance']}, {s['rebases']} re-bases, {len(violations)} violations, "
                  f"{hourly[-1]['wall_s']:.0f} s", flush=True)
            next_q += every_s
    wall = time.perf_counter() - t0
    question = "What is on the screen now?"
    mine = ms.ask(question, keep_logits=True, sampling=samp, window_only=True)
    twin = fresh_twin(bb, ms, sinks)
    ref = twin.ask(question, keep_logits=True, sampling=samp)
    diff = max(float((a - b).abs().max()) for a, b in zip(mine.logits, ref.logits))
    stats = ms.stats()
    twin.close()
    ms.close()
    first = hourly[0]["rss"] if hourly else None
    drift = (hourly[-1]["rss"] - first) / first if len(hourly) > 1 else None
    return {
        "policy": policy, "hours": hours, "patches": n, "wall_s": wall, "patches_per_s": n / wall,
        "memory_config": dataclasses.asdict(cfg), "violations": len(violations), "violation_samples": violations[:20],
        "rss_hour_first": first, "rss_hour_last": hourly[-1]["rss"] if hourly else None, "rss_drift": drift,
        "max_distance": stats["max_distance"], "trained_positions": bb.max_positions, "rebases": stats["rebases"],
        "evicted": stats["evicted"], "tiers": stats["tiers"],
        "final_check": {"question": question, "window_only": True, "tokens": mine.token_ids, "fresh_tokens": ref.token_ids,
                        "same_tokens": mine.token_ids == ref.token_ids, "max_logit_diff": diff,
                        "context_tokens": mine.context_tokens, "fresh_context_tokens": ref.context_tokens},
        "hourly": hourly,
    }


def main(args: argparse.Namespace) -> int:
    import tempfile

    from longwatch.backbone.model import Backbone
    from longwatch.eval.environment import model_tag, results_dir, save_result
    from longwatch.eval.flags import config_from_args

    bad = check_settings(args)
    if bad:
        for line in bad:
            print(f"longwatch bench soak: {line}")
        return 2
    cfg = config_from_args(args)
    out = results_dir(args.out)
    bb = Backbone.load(cfg.model.greedy())  # greedy whatever the checkpoint's defaults
    runs = []
    for policy in [p.strip() for p in args.policies.split(",")]:
        with tempfile.TemporaryDirectory(prefix=f"longwatch-soak-{policy}-") as disk:
            runs.append(soak(bb, policy, args.hours, cfg.ingest.fps, cfg.ingest.frame_size, args.question_every_s, disk,
                             args.rebase_limit))
    missed = []
    for r in runs:
        if r["violations"]:
            missed.append(f"{r['policy']}: {r['violations']} budget violations")
        if r["rss_drift"] is not None and r["rss_drift"] >= TARGET_RSS_DRIFT:
            missed.append(f"{r['policy']}: host RSS drift {r['rss_drift']:.1%} >= {TARGET_RSS_DRIFT:.0%}")
        if r["max_distance"] >= r["trained_positions"]:
            missed.append(f"{r['policy']}: max distance {r['max_distance']} >= {r['trained_positions']}")
        if not r["final_check"]["same_tokens"]:
            missed.append(f"{r['policy']}: hour-{args.hours:g} answer differs from the fresh stream's")
    result = {"model": cfg.model.name, "frame_size": cfg.ingest.frame_size, "fps": cfg.ingest.fps, "hours": args.hours,
              "targets": {"violations": 0, "rss_drift_below": TARGET_RSS_DRIFT, "max_distance_below": bb.max_positions,
                          "same_tokens": True},
              "missed": missed, "runs": runs}
    path = save_result(f"soak_{model_tag(cfg.model.name)}_{args.hours:g}h", result, out)
    if args.json:
        print(json.dumps({"missed": missed, "saved": str(path),
                          "runs": [{k: v for k, v in r.items() if k != "hourly"} for r in runs]}))
    else:
        for r in runs:
            drift = "n/a" if r["rss_drift"] is None else f"{r['rss_drift']:+.2%}"
            fc = r["final_check"]
            print(f"{r['policy']}: {r['patches']} patches ({r['hours']:g} h) in {r['wall_s']:.0f} s; "
                  f"{r['violations']} budget violations; RSS drift hour 1 -> {r['hours']:g}: {drift}; "
                  f"max distance {r['max_distance']} of {r['trained_positions']} ({r['rebases']} re-bases); "
                  f"hour-{r['hours']:g} tokens {'equal' if fc['same_tokens'] else 'DIFFER'} "
                  f"(max logit diff {fc['max_logit_diff']:.2e})")
        print(("targets met" if not missed else "missed: " + "; ".join(missed)) + f"; saved {path}")
    return 1 if missed else 0
