"""Speed benchmark: ingest cost per patch, time to first token and memory, against stream length.

    longwatch bench speed --model tiny --minutes 1,10,60 --policy full,rekv --frame-size 224
    longwatch bench speed --model random-8b --minutes 10,60,240 --policy full,rekv --streams 1,30 \\
        --device cuda --frame-size 448                         # the GPU run (bf16 by default on CUDA)

One synthetic stream per policy runs to the longest length; at each length a question is asked
(time to first token, decode tokens/s) and memory is read (peak device bytes, host RSS). Random
weights are fine: speed does not depend on weight values. With --streams N, N independent memories
share the model and each step encodes one patch of every stream in one batched forward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from longwatch.eval.flags import add_config_flags
from longwatch.eval.progress import add_progress_flags, advance_to, seconds_bar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", default="1,5,10", help="stream lengths to measure at, comma-separated (default 1,5,10)")
    p.add_argument("--streams", default="1", help="concurrent streams, comma-separated counts (default 1)")
    p.add_argument("--answer-tokens", type=int, default=16, help="tokens decoded per question (default 16)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="DIR", help="results folder (default ./runs)")
    p.add_argument("--name", help="result file name (default speed_<model>_<device>)")
    add_progress_flags(p)
    add_config_flags(p, policy_help="comma-separated policies (default full,rekv)")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device, dtype) -> tuple[float, str]:
    """Peak FLOP/s for MFU: datasheet dense bf16 for known GPUs, else a measured matmul on this device."""
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12)):
            if key in name:
                return tflops, f"{name} dense bf16 datasheet"
    n = 2048 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ a
    _sync(device)
    reps, t0 = 8, time.perf_counter()
    for _ in range(reps):
        a @ a
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0), f"measured {n}x{n} {dtype} matmul"


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def run_policy(bb, cfg, policy: str, lengths: list[float], n_streams: int, answer_tokens: int, peak: float,
               bar=None) -> dict:
    """One run: `n_streams` streams under `policy` to max(lengths) minutes; returns per-patch costs and checkpoints.
    `bar` (eval.progress.seconds_bar) advances with the stream seconds encoded."""
    import dataclasses

    import torch

    from longwatch.backbone.model import Sampling
    from longwatch.eval.flops import patch_flops
    from longwatch.eval.synthetic import synthetic_patches
    from longwatch.memory.multistream import ingest_batch
    from longwatch.memory.stream import MemoryStream

    mem_cfg = dataclasses.replace(cfg.memory, policy=policy)
    warm = MemoryStream(bb, mem_cfg, stream_id=f"warmup-{policy}")  # first calls allocate and dispatch slowly
    for patch, _ in zip(synthetic_patches(0.2, cfg.ingest.fps, cfg.ingest.frame_size), range(6)):
        warm.ingest(patch)
    warm.ask("warm up", sampling=Sampling(max_new_tokens=2))
    warm.close()
    streams = [MemoryStream(bb, mem_cfg, stream_id=f"speed-{policy}-{i}") for i in range(n_streams)]
    if bb.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(bb.device)
    costs, flops, checkpoints, stopped = [], 0.0, [], None
    batch: dict = {}
    batch_peak = 0
    marks = sorted(lengths)
    wall0 = time.perf_counter()
    samp = Sampling(temperature=0.0, max_new_tokens=answer_tokens)
    for patch in synthetic_patches(max(lengths), cfg.ingest.fps, cfg.ingest.frame_size):
        context = streams[0].cache.length
        _sync(bb.device)
        t0 = time.perf_counter()
        try:
            if n_streams == 1:
                streams[0].ingest(patch)
            else:
                # the batch copy's own budget: every stream's device budget, so one forward takes them all
                ingest_batch(streams, [patch] * n_streams, budget=n_streams * mem_cfg.device_budget, report=batch)
                batch_peak = max(batch_peak, batch.get("peak_bytes", 0))
        except torch.OutOfMemoryError:  # `full` is unbounded: on a long enough stream it runs out
            stopped = f"out of device memory at {patch.t_start / 60:.1f} min"
            break
        _sync(bb.device)
        costs.append(time.perf_counter() - t0)
        if bar is not None:
            advance_to(bar, patch.t_end)
        tokens = bb.tokens_per_patch((patch.height, patch.width), patch.t_mid)
        flops += n_streams * patch_flops(bb.model.config, (patch.height, patch.width), tokens, context)["total"]
        if marks and patch.t_end >= marks[0] * 60 - 1e-6:
            minute = marks.pop(0)
            ans = streams[0].ask("What did the sign say a minute ago?", sampling=samp)
            n_dec = max(1, len(ans.token_ids) - 1)
            dev_peak = torch.cuda.max_memory_allocated(bb.device) if bb.device.type == "cuda" else \
                sum(s.stats()["tiers"]["device"]["peak"] for s in streams)
            elapsed = time.perf_counter() - wall0
            checkpoints.append({
                "minutes": minute, "patches": len(costs), "ttft_s": ans.ttft_s,
                "decode_tok_s": n_dec / max(1e-9, ans.decode_s - ans.ttft_s + ans.retrieval_s + ans.prefill_s)
                if ans.decode_s > 0 else None,
                "context_tokens": ans.context_tokens, "device_peak_bytes": dev_peak, "host_rss_bytes": _rss(),
                "host_tier_bytes": sum(s.stats()["tiers"]["host"]["bytes"] for s in streams),
                "wall_s": elapsed, "lag_s": max(0.0, elapsed - minute * 60),
            })
    tenth = max(1, len(costs) // 10)
    first, last = costs[:tenth], costs[-tenth:]
    total = sum(costs)
    for s in streams:
        s.close()
    return {
        "policy": policy, "streams": n_streams, "patches_per_stream": len(costs),
        "patches_per_s": n_streams * len(costs) / total, "frames_per_s": 2 * n_streams * len(costs) / total,
        "per_patch_s_first_tenth": statistics.mean(first), "per_patch_s_last_tenth": statistics.mean(last),
        "flat_ratio": statistics.mean(last) / statistics.mean(first),
        # medians too: on a shared machine other work adds spikes to single patches, which move means
        "per_patch_s_first_tenth_median": statistics.median(first),
        "per_patch_s_last_tenth_median": statistics.median(last),
        "flat_ratio_median": statistics.median(last) / statistics.median(first),
        "flops_per_s": flops / total, "mfu": flops / total / peak,
        "keeps_up_with_2fps": n_streams * len(costs) / total >= n_streams * cfg.ingest.fps / 2,
        "checkpoints": checkpoints, "patch_costs_s": costs, "stopped": stopped,
        "batch_copy_peak_bytes": batch_peak,
    }


def plot(runs: list[dict], path) -> None:
    """The three curves against stream length: cost per patch, time to first token, memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for r in runs:
        label = f"{r['policy']} x{r['streams']}"
        costs = r["patch_costs_s"]
        k = max(1, len(costs) // 100)
        smooth = [sum(costs[i: i + k]) / len(costs[i: i + k]) * 1000 for i in range(0, len(costs), k)]
        axes[0].plot([i * k / 60 for i in range(len(smooth))], smooth, label=label)
        mins = [c["minutes"] for c in r["checkpoints"]]
        axes[1].plot(mins, [c["ttft_s"] * 1000 for c in r["checkpoints"]], marker="o", label=label)
        axes[2].plot(mins, [c["device_peak_bytes"] / 2**20 for c in r["checkpoints"]], marker="o", label=f"{label} device")
        # The host tier, not the process RSS: policies run one after another in one process, whose RSS
        # never shrinks, so RSS (kept in the JSON) would credit one policy's memory to the next.
        axes[2].plot(mins, [c["host_tier_bytes"] / 2**20 for c in r["checkpoints"]], ls="--", label=f"{label} host tier")
    axes[0].set(xlabel="stream time (min)", ylabel="ingest cost per patch (ms)", title="cost per patch", yscale="log")
    axes[1].set(xlabel="stream length (min)", ylabel="time to first token (ms)", title="answer latency", yscale="log")
    axes[2].set(xlabel="stream length (min)", ylabel="MiB", title="memory: device peak, host tier")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    from longwatch.backbone.model import Backbone
    from longwatch.eval.environment import model_tag, results_dir, save_result
    from longwatch.eval.flags import config_from_args

    policies = [p.strip() for p in (getattr(args, "memory.policy", None) or "full,rekv").split(",")]
    setattr(args, "memory.policy", None)
    lengths = [float(m) for m in args.minutes.split(",")]
    counts = [int(n) for n in args.streams.split(",")]
    cfg = config_from_args(args)
    folder = results_dir(args.out)
    bb = Backbone.load(cfg.model.greedy())  # greedy whatever the checkpoint's defaults
    peak, peak_src = peak_flops(bb.device, bb.dtype)
    runs = []
    combos = [(n, policy) for n in counts for policy in policies]
    for k, (n, policy) in enumerate(combos, 1):
        desc = f"speed {k}/{len(combos)}: {policy} x{n} to {max(lengths):g} min"
        with seconds_bar(max(lengths) * 60, desc, force=args.progress) as bar:
            r = run_policy(bb, cfg, policy, lengths, n, args.answer_tokens, peak, bar)
        runs.append(r)
        if not args.json:
            cps = ", ".join(f"{c['minutes']:g} min {c['ttft_s'] * 1000:.0f} ms" for c in r["checkpoints"])
            print(f"{policy:9s} x{n}: {r['frames_per_s']:.1f} frames/s, per patch {r['per_patch_s_first_tenth'] * 1000:.1f}"
                  f" -> {r['per_patch_s_last_tenth'] * 1000:.1f} ms (x{r['flat_ratio']:.2f}; medians"
                  f" x{r['flat_ratio_median']:.2f}), MFU {r['mfu']:.2%};"
                  f" TTFT {cps}")
    name = args.name or f"speed_{model_tag(cfg.model.name)}_{bb.device.type}"
    png = f"{folder}/{name}.png"
    plot(runs, png)
    summary = {f"{r['policy']}x{r['streams']}": {k: r[k] for k in ("frames_per_s", "flat_ratio", "flat_ratio_median", "mfu")}
               | {"ttft_ms": {c["minutes"]: round(c["ttft_s"] * 1000, 1) for c in r["checkpoints"]}} for r in runs}
    path = save_result(name, {"model": cfg.model.name, "device": str(bb.device), "dtype": str(bb.dtype),
                              "attn": bb.loaded.attn, "frame_size": cfg.ingest.frame_size, "fps": cfg.ingest.fps,
                              "lengths_min": lengths, "peak_flops": peak, "peak_flops_source": peak_src,
                              "summary": summary, "runs": runs, "plot": png}, folder)
    if args.json:
        print(json.dumps({"summary": summary, "saved": str(path), "plot": png}))
    else:
        print(f"saved {path} and {png}")
    return 0
