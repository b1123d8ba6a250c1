"""Fidelity benchmark: each policy's answer distribution vs one non-streaming full-context forward.

    longwatch bench fidelity --model tiny --minutes 2 --policy full,sliding,rekv,infinipot,streammem,livevlm --json

Reports mean KL(reference || policy), top-1 agreement and attention-mass recall per policy and
question (see eval/fidelity.py). `full` must give KL below 1e-6.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from longwatch.eval.flags import add_config_flags
from longwatch.eval.progress import add_progress_flags, bar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=2.0, help="length of the synthetic stream (default 2)")
    p.add_argument("--answer-tokens", type=int, default=8, help="answer tokens compared per question")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="DIR", help="results folder (default ./runs)")
    add_progress_flags(p)
    # --policy takes a comma-separated list here; it is split before the config is built
    add_config_flags(p, policy_help="comma-separated policies (default full,sliding,rekv,infinipot,streammem,livevlm)")


def questions(minutes: float) -> list[str]:
    """Questions about the synthetic stream: a named time, a relative time, no time."""
    mid = int(minutes * 60 / 2)
    return [f"What did the sign say at {mid // 60:02d}:{mid % 60:02d}?",
            "What happened in the first 30 seconds?",
            "What is on the screen?"]


def main(args: argparse.Namespace) -> int:
    from longwatch.backbone.model import Backbone, Sampling
    from longwatch.eval.environment import model_tag, results_dir, save_result
    from longwatch.eval.flags import config_from_args
    from longwatch.eval.fidelity import measure
    from longwatch.eval.synthetic import synthetic_patches
    from longwatch.memory.stream import MemoryStream

    policies = (getattr(args, "memory.policy", None) or "full,sliding,rekv,infinipot,streammem,livevlm").split(",")
    setattr(args, "memory.policy", None)
    cfg = config_from_args(args)
    out = results_dir(args.out)
    bb = Backbone.load(cfg.model.greedy())  # greedy whatever the checkpoint's defaults
    patches = list(synthetic_patches(args.minutes, cfg.ingest.fps, cfg.ingest.frame_size))
    segments = [bb.layout.prefix()] + [bb.patch_segment(p.frames, p.t_start, p.t_end, (p.height, p.width), p.t_mid)
                                       for p in patches]
    samp = Sampling(temperature=0.0, max_new_tokens=args.answer_tokens)
    rows = []
    asked = questions(args.minutes)
    for k, policy in enumerate(policies, 1):
        mem_cfg = dataclasses.replace(cfg.memory, policy=policy.strip())
        ms = MemoryStream(bb, mem_cfg, stream_id=f"fidelity-{policy}")
        desc = f"fidelity {k}/{len(policies)}: {policy} {args.minutes:g} min"
        with bar(len(patches) + len(asked), desc, "step", force=args.progress) as steps:  # patches, then questions
            for p in patches:
                ms.ingest(p)
                steps.update(1)
            for q in asked:
                ans = ms.ask(q, keep_logits=True, sampling=samp)
                m = measure(bb, segments, q, ans)
                rows.append({"policy": policy, "question": q, **m, "context_tokens": ans.context_tokens,
                             "ttft_s": ans.ttft_s})
                steps.update(1)
        ms.close()
    summary = {}
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        summary[policy] = {k: sum(r[k] for r in mine) / len(mine) for k in ("kl", "top1", "attn_recall", "context_tokens")}
    result = {"model": cfg.model.name, "minutes": args.minutes, "patches": len(patches),
              "frame_size": cfg.ingest.frame_size, "summary": summary, "rows": rows,
              "memory_config": {k: getattr(cfg.memory, k) for k in cfg.memory.__dataclass_fields__ if k != "policy"}}
    path = save_result(f"fidelity_{model_tag(cfg.model.name)}_{args.minutes:g}min", result, out)
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows, "saved": str(path)}))
    else:
        print(f"{'policy':10s} {'KL(ref||policy)':>16s} {'top-1':>7s} {'attn recall':>12s} {'context':>8s}")
        for policy, s in summary.items():
            print(f"{policy:10s} {s['kl']:16.3g} {s['top1']:7.3f} {s['attn_recall']:12.3f} {s['context_tokens']:8.0f}")
        print(f"saved {path}")
    bad = "full" in summary and summary["full"]["kl"] >= 1e-6
    return 1 if bad else 0
