"""Streaming equals offline: every question of a benchmark answered twice, by the streaming `full` policy and by
one full-sequence forward of [prefix, the patches seen so far, question], then decoded the same way.

    longwatch bench offline --bench runs/needlestream-tiny --model needle-tiny --max-videos 50 --json

Reports accuracy per task for both, how many replies differ, and the questions whose score differs.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from longwatch.eval.flags import add_config_flags


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench", required=True, metavar="FILE_OR_DIR", help="benchmark annotations (e.g. NeedleStream)")
    p.add_argument("--videos", metavar="DIR", help="folder with the videos (default: beside the annotations)")
    p.add_argument("--max-videos", type=int, default=None, metavar="N", help="only the first N videos")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="DIR", help="results folder (default ./runs)")
    add_config_flags(p)


def offline_answers(bb: Any, benches: list, videos_dir: Any, cfg: Any, max_videos: int | None) -> dict[str, str]:
    """qid -> reply from one forward over everything visible when the question is asked (no streaming)."""
    import torch
    from transformers import DynamicCache

    from longwatch.backbone.model import decode, prefill
    from longwatch.eval.formats.prompts import format_prompt
    from longwatch.eval.runner import open_patches_default, resolve_video

    opener = open_patches_default(cfg)
    replies: dict[str, str] = {}
    samp = bb.sampling
    with torch.inference_mode():
        for bench in benches:
            for video in bench.videos[:max_videos]:
                path = resolve_video(video.video_path, Path(videos_dir) if videos_dir else None,
                                     Path(bench.source).parent)
                with opener(str(path)) as patches:
                    seen = [(p.t_start, bb.patch_segment(p.frames, p.t_start, p.t_end, (p.height, p.width), p.t_mid))
                            for p in patches]
                for q in video.questions:
                    ask = math.inf if q.ask_time_s is None else q.ask_time_s
                    segs = [bb.layout.prefix()] + [s for t, s in seen if t < ask] + [bb.layout.question(format_prompt(q))]
                    cache = DynamicCache(config=bb.model.config)
                    first = prefill(bb.model, cache, segs, 0)
                    out = decode(bb.model, cache, first.logits[-1], first.next_position, bb.tokenizer,
                                 bb.layout.stop_ids, samp)
                    replies[q.qid] = out.text
    return replies


def main(args: argparse.Namespace) -> int:
    import json

    from longwatch.backbone.model import Backbone
    from longwatch.eval.environment import model_tag, save_result
    from longwatch.eval.flags import config_from_args
    from longwatch.eval.formats import load_benches
    from longwatch.eval.runner import RunOptions, Runner, memory_stream_factory, open_patches_default
    from longwatch.eval.scoring import score_question

    cfg = config_from_args(args, {"memory.policy": "full", "model.temperature": 0.0})
    benches = load_benches(args.bench)
    bb = Backbone.load(cfg.model.greedy())  # greedy whatever the checkpoint's defaults
    runner = Runner(cfg, memory_stream_factory(bb), open_patches_default(cfg))
    streamed = runner.run(benches, args.videos, RunOptions(policies=["full"], max_videos=args.max_videos,
                                                            progress=not args.json))
    offline = offline_answers(bb, benches, args.videos, cfg, args.max_videos)
    questions = {q.qid: q for b in benches for v in b.videos for q in v.questions}
    per_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"streaming": [], "offline": []})
    differ, score_differs = 0, []
    for r in streamed.records:
        q = questions[r["qid"]]
        off = score_question(q, offline[r["qid"]])
        per_task[q.task]["streaming"].append(float(r["score"] or 0))
        per_task[q.task]["offline"].append(float(off.score or 0))
        differ += (r["reply"] or "").strip() != offline[r["qid"]].strip()
        if bool(r["correct"]) != bool(off.correct):
            score_differs.append({"qid": r["qid"], "streaming": r["reply"], "offline": offline[r["qid"]]})
    n = len(streamed.records)
    tasks = {t: {"n": len(v["streaming"]), "streaming": sum(v["streaming"]) / len(v["streaming"]),
                 "offline": sum(v["offline"]) / len(v["offline"])} for t, v in sorted(per_task.items())}
    result = {"bench": args.bench, "model": cfg.model.name, "frame_size": cfg.ingest.frame_size, "questions": n,
              "replies_differ": differ, "correctness_differs": len(score_differs), "tasks": tasks,
              "streaming_accuracy": sum(sum(v["streaming"]) for v in per_task.values()) / max(1, n),
              "offline_accuracy": sum(sum(v["offline"]) for v in per_task.values()) / max(1, n),
              "differing_questions": score_differs[:50]}
    path = save_result(f"offline_{model_tag(cfg.model.name)}", result, args.out)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{n} questions: streaming {result['streaming_accuracy']:.3f}, offline {result['offline_accuracy']:.3f}; "
              f"{differ} replies differ, {len(score_differs)} differ in correctness; saved {path}")
    return 0
